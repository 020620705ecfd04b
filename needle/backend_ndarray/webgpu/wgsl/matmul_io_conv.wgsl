// matmul.wgsl's memory interface for conv2d as an implicit GEMM: A is the im2col matrix
// of the padded NHWC input, never built: row r is output pixel (image, oh, ow) and column
// kk is (kh, kw, ci) of its receptive field. B is the (ks * ks * c, out_channels) weight.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn load_a(bat: u32, row: u32, k: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row >= p.m) { return v; }
    let ow = row % p.wo;
    let oh = (row / p.wo) % p.ho;
    let image = row / (p.wo * p.ho);
    for (var j = 0u; j < 4u; j++) {
        let kk = k + j;
        if (kk < k_end) {
            let ci = kk % p.c;
            let kw = (kk / p.c) % p.ks;
            let kh = kk / (p.c * p.ks);
            let y = oh * p.stride + kh;
            let x = ow * p.stride + kw;
            v[j] = a[((image * p.h + y) * p.w + x) * p.c + ci];
        }
    }
    return v;
}

fn load_b(bat: u32, k: u32, col: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (k >= k_end) { return v; }
    for (var j = 0u; j < 4u; j++) {
        if (col + j < p.n) { v[j] = b[k * p.n + col + j]; }
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
