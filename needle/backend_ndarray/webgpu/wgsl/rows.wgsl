// Fused row kernels (softmax, logsumexp, cross-entropy, LayerNorm and its backward): one
// workgroup per row of `cols` contiguous elements; threads stride over the row and combine
// with wg_sum / wg_max. Semantics are those of numpy_backend.py (and PyTorch's) for
// infinities and NaN too; they are spelled out with bit tests, not left to NaN arithmetic.
// Host constant: WG (threads per workgroup).
// include: math.wgsl
// include: workgroup_reduce.wgsl

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // the row-major input
@group(0) @binding(2) var<storage, read> aux: array<f32>;        // labels / weight / grad
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // per element (dweight)
@group(0) @binding(4) var<storage, read_write> row_a: array<f32>;  // per row: loss, mean
@group(0) @binding(5) var<storage, read_write> row_b: array<f32>;  // per row: rstd
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>;   // dbias

fn row_max(base: u32, lane: Lane) -> f32 {
    var m = -needle_inf();
    for (var c = lane.index; c < p.cols; c += WG) { m = needle_max(m, x[base + c]); }
    return wg_max(m, lane);
}

fn row_sum_exp(base: u32, m: f32, lane: Lane) -> f32 {
    var s = 0.0;
    for (var c = lane.index; c < p.cols; c += WG) { s += exp(x[base + c] - m); }
    return wg_sum(s, lane);
}

@compute @workgroup_size(WG)
fn logsumexp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             lane: Lane) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let m = row_max(base, lane);
    let s = row_sum_exp(base, m, lane);
    // a max that is not finite is the answer: +inf, -inf (every element -inf) or NaN
    if (lane.index == 0u) { row_a[r] = select(m, needle_log(s) + m, needle_isfinite(m)); }
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           lane: Lane) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let m = row_max(base, lane);
    let s = row_sum_exp(base, m, lane);
    let finite = needle_isfinite(m);  // else (+inf, all -inf or NaN in the row) NaN, as torch
    for (var c = lane.index; c < p.cols; c += WG) {
        out[base + c] = select(needle_nan(), exp(x[base + c] - m) / s, finite);
    }
}

// loss[r] = (max - x[r, label]) + log(sum(exp(x[r] - max))): the large max cancels before
// the small log is added. grad[r, c] = softmax(x[r])[c] - (c == label). The labels (aux)
// are stored as floats; rows whose max is not finite (and bad labels) give NaN, as torch.
@compute @workgroup_size(WG)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 lane: Lane) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let label = select(p.cols, u32(aux[r]), aux[r] >= 0.0);  // (u32(-1.0) would be 0)
    let m = row_max(base, lane);
    let s = row_sum_exp(base, m, lane);
    let finite = needle_isfinite(m);
    for (var c = lane.index; c < p.cols; c += WG) {
        let g = exp(x[base + c] - m) / s - select(0.0, 1.0, c == label);
        out[base + c] = select(needle_nan(), g, finite);
    }
    if (lane.index == 0u) {
        let loss = (m - x[base + min(label, p.cols - 1u)]) + needle_log(s);
        row_a[r] = select(needle_nan(), loss, finite && label < p.cols);
    }
}

// out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(biased variance + eps).
@compute @workgroup_size(WG)
fn layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             lane: Lane) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = lane.index; c < p.cols; c += WG) { s += x[base + c]; }
    let mean = wg_sum(s, lane) / n;
    var q = 0.0;  // two passes: no cancellation in E[x^2] - E[x]^2
    for (var c = lane.index; c < p.cols; c += WG) {
        let d = x[base + c] - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(q, lane) / n + p.eps);
    for (var c = lane.index; c < p.cols; c += WG) {
        out[base + c] = (x[base + c] - mean) * rstd * weight[c] + bias[c];
    }
    if (lane.index == 0u) {
        row_a[r] = mean;
        row_b[r] = rstd;
    }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) with gw = grad * weight; the grad
// is aux; mean and rstd come in row_a / row_b (only read here).
@compute @workgroup_size(WG)
fn layernorm_backward_dx(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let mean = row_a[r];
    let rstd = row_b[r];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var c = lane.index; c < p.cols; c += WG) {
        let gw = aux[base + c] * weight[c];
        s1 += gw;
        s2 += gw * (x[base + c] - mean) * rstd;
    }
    let n = f32(p.cols);
    let mean_gw = wg_sum(s1, lane) / n;
    let mean_gwx = wg_sum(s2, lane) / n;
    for (var c = lane.index; c < p.cols; c += WG) {
        let xhat = (x[base + c] - mean) * rstd;
        out[base + c] = rstd * (aux[base + c] * weight[c] - mean_gw - xhat * mean_gwx);
    }
}

// dweight[c] = sum_r grad * xhat, dbias[c] = sum_r grad: one thread per column, reading
// rows in order so neighbouring threads read neighbouring addresses.
@compute @workgroup_size(WG)
fn layernorm_backward_dwb(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let c = group_index(wid, nwg) * WG + lid;
    if (c >= p.cols) { return; }
    var dw = 0.0;
    var db = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let g = aux[r * p.cols + c];
        dw += g * (x[r * p.cols + c] - row_a[r]) * row_b[r];
        db += g;
    }
    out[c] = dw;
    out2[c] = db;
}
