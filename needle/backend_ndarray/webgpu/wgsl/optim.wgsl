// Optimizer updates, in place, one thread per parameter element: PyTorch's SGD (with
// optional momentum) and Adam with L2 weight decay, as in numpy_backend.py.
// include: common.wgsl

struct Params {
    n: u32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,     // sgd
    first_step: u32,   // sgd: the momentum buffer starts as the gradient
    beta1: f32,        // adam
    beta2: f32,
    eps: f32,
    // adam: 1 - beta1, 1 - beta2, 1 - beta1^step, 1 - beta2^step, rounded from float64 on
    // the host as NumPy rounds them
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    bias_c1: f32,
    bias_c2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf: array<f32>;  // sgd momentum / adam m
@group(0) @binding(4) var<storage, read_write> buf2: array<f32>; // adam v

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    param[i] -= p.lr * (grad[i] + p.weight_decay * param[i]);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    let g = grad[i] + p.weight_decay * param[i];
    var v = g;
    if (p.first_step == 0u) { v = p.momentum * buf[i] + g; }
    buf[i] = v;
    param[i] -= p.lr * v;
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    let g = grad[i] + p.weight_decay * param[i];
    let m = p.beta1 * buf[i] + p.one_minus_beta1 * g;
    let v = p.beta2 * buf2[i] + p.one_minus_beta2 * g * g;
    buf[i] = m;
    buf2[i] = v;
    param[i] -= p.lr * (m / p.bias_c1) / (sqrt(v / p.bias_c2) + p.eps);
}
