// BatchNorm's running statistics updated in place from a batch's per-channel mean and
// biased variance, one thread per channel (numpy_backend.running_stats).
// include: common.wgsl

struct Params {
    n: u32,
    momentum: f32,
    keep: f32,      // 1 - momentum, rounded from float64 on the host
    unbiased: f32,  // n / (n - 1) for n values per channel
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(4) var<storage, read> variance: array<f32>;

@compute @workgroup_size(256)
fn running_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    running_mean[i] = running_mean[i] * p.keep + mean[i] * p.momentum;
    running_var[i] = running_var[i] * p.keep + variance[i] * p.unbiased * p.momentum;
}
