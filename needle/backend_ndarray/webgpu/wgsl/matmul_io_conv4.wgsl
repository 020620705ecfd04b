// matmul.wgsl's memory interface for conv2d when in and out channels are multiples of 4:
// as matmul_io_conv.wgsl, but four consecutive columns kk .. kk+3 of the implicit im2col
// matrix are four consecutive channels of one input pixel, so they load as one vec4.
// Host constant CHECKED as in matmul_io_vec4.wgsl.

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

fn load_a(bat: u32, row: u32, k: u32, k_end: u32) -> vec4<f32> {
    if (CHECKED && (row >= p.m || k >= k_end)) { return vec4<f32>(0.0); }
    let ow = row % p.wo;
    let oh = (row / p.wo) % p.ho;
    let image = row / (p.wo * p.ho);
    let ci = k % p.c;
    let kw = (k / p.c) % p.ks;
    let kh = k / (p.c * p.ks);
    let y = oh * p.stride + kh;
    let x = ow * p.stride + kw;
    return a[(((image * p.h + y) * p.w + x) * p.c + ci) / 4u];
}

fn load_b(bat: u32, k: u32, col: u32, k_end: u32) -> vec4<f32> {
    if (CHECKED && (k >= k_end || col >= p.n)) { return vec4<f32>(0.0); }
    return b[(k * p.n + col) / 4u];
}

fn store_c(slice: u32, row: u32, col: u32, v: vec4<f32>) {
    if (CHECKED && (row >= p.m || col >= p.n)) { return; }
    c[((slice * p.m + row) * p.n + col) / 4u] = v;
}
