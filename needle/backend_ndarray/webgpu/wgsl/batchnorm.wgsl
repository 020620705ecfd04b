// BatchNorm with given statistics, one thread per element (numpy_backend.batchnorm):
// out = OP((x [+ x_bias[c]] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]) where
// c = (element / inner) % channels, the element counted from the whole buffer's start.
// Host constants: OP (UNARY_RELU or UNARY_IDENTITY); HAS_X_BIAS (without it, binding 2
// holds any buffer and is not read).
// include: math.wgsl

struct Params {
    n: u32,         // elements in this dispatch
    start: u32,     // index of this dispatch's first element in the buffer
    channels: u32,
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x_bias: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> variance: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn batchnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    let c = ((p.start + i) / p.inner) % p.channels;
    var v = x[i];
    if (HAS_X_BIAS) { v = v + x_bias[c]; }
    let y = (v - mean[c]) / sqrt(variance[c] + p.eps) * weight[c] + bias[c];
    out[i] = needle_unary(OP, y);
}
