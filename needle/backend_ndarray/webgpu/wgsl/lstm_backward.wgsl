// One step back through the LSTM cell (numpy_backend.lstm_backward): dh = dhs + dh_carry,
// dc = dcs + dc_carry + dh * o * (1 - tanh(c)^2); writes the pre-activation gradients dz at
// the step's offset and the carried dc * f into dc_carry (each thread its own element).
// The host then forms dh_carry = dz[t] @ W_hh^T. Layout as in lstm.wgsl.
// include: math.wgsl

struct Params {
    n: u32,
    hidden: u32,
    zoff: u32,
    hoff: u32,
    first: u32,   // step 0: the previous cell state is c0, not cs[t - 1]
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gates: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read> c0: array<f32>;
@group(0) @binding(4) var<storage, read> dhs: array<f32>;
@group(0) @binding(5) var<storage, read> dcs: array<f32>;
@group(0) @binding(6) var<storage, read> dh_carry: array<f32>;
@group(0) @binding(7) var<storage, read_write> dc_carry: array<f32>;
@group(0) @binding(8) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(256)
fn lstm_cell_backward(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e >= p.n) { return; }
    let z = p.zoff + (e / p.hidden) * 4u * p.hidden + e % p.hidden;
    let k = p.hidden;
    let i = gates[z];
    let f = gates[z + k];
    let g = gates[z + 2u * k];
    let o = gates[z + 3u * k];
    var c_prev: f32;
    if (p.first == 1u) { c_prev = c0[e]; } else { c_prev = cs[p.hoff - p.n + e]; }
    let dh = dhs[p.hoff + e] + dh_carry[e];
    let tc = needle_tanh(cs[p.hoff + e]);
    let dc = dcs[p.hoff + e] + dc_carry[e] + dh * o * (1.0 - tc * tc);
    dz[z] = dc * g * i * (1.0 - i);
    dz[z + k] = dc * c_prev * f * (1.0 - f);
    dz[z + 2u * k] = dc * i * (1.0 - g * g);
    dz[z + 3u * k] = dh * tc * o * (1.0 - o);
    dc_carry[e] = dc * f;
}
