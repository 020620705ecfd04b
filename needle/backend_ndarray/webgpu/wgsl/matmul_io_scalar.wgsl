// matmul.wgsl's memory interface for any M, N, K: scalar loads and stores, each checked.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn load_a(bat: u32, row: u32, k: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row >= p.m) { return v; }
    let base = (bat * p.m + row) * p.k;
    for (var j = 0u; j < 4u; j++) {
        if (k + j < k_end) { v[j] = a[base + k + j]; }
    }
    return v;
}

fn load_b(bat: u32, k: u32, col: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (k >= k_end) { return v; }
    let base = (bat * p.k + k) * p.n;
    for (var j = 0u; j < 4u; j++) {
        if (col + j < p.n) { v[j] = b[base + col + j]; }
    }
    return v;
}

fn store_c(slice: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    let base = (slice * p.m + row) * p.n;
    for (var j = 0u; j < 4u; j++) {
        if (col + j < p.n) { c[base + col + j] = v[j]; }
    }
}
