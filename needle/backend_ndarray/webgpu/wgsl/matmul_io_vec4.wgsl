// matmul.wgsl's memory interface with vec4 loads and stores (K and N multiples of 4).
// Host constant CHECKED: false when M, N and K are multiples of the tile sizes (and of
// the split), so the hot loop's loads carry no bounds checks at all.

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

fn load_a(bat: u32, row: u32, k: u32, k_end: u32) -> vec4<f32> {
    if (CHECKED && (row >= p.m || k >= k_end)) { return vec4<f32>(0.0); }
    return a[((bat * p.m + row) * p.k + k) / 4u];
}

fn load_b(bat: u32, k: u32, col: u32, k_end: u32) -> vec4<f32> {
    if (CHECKED && (k >= k_end || col >= p.n)) { return vec4<f32>(0.0); }
    return b[((bat * p.k + k) * p.n + col) / 4u];
}

fn store_c(slice: u32, row: u32, col: u32, v: vec4<f32>) {
    if (CHECKED && (row >= p.m || col >= p.n)) { return; }
    c[((slice * p.m + row) * p.n + col) / 4u] = v;
}
