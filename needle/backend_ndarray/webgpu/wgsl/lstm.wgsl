// The LSTM cell, one dispatch per time step of a layer (backend.lstm loops over the steps,
// with the recurrent product between dispatches; numpy_backend.lstm is the specification).
// One thread per (batch row, hidden unit); a row of xp, hz and gates holds the four gate
// blocks (i, f, g, o) of `hidden` each. h and c are the running state (h is the next
// product's operand); the step's values also go to hs, cs and gates at its offsets.
// include: math.wgsl

struct Params {
    n: u32,       // batch * hidden
    hidden: u32,
    zoff: u32,    // this step's first element in xp and gates (t * batch * 4 * hidden)
    hoff: u32,    // and in hs and cs (t * batch * hidden)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xp: array<f32>;
@group(0) @binding(2) var<storage, read> hz: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> gates: array<f32>;
@group(0) @binding(5) var<storage, read_write> cs: array<f32>;
@group(0) @binding(6) var<storage, read_write> hs: array<f32>;
@group(0) @binding(7) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(256)
fn lstm_cell(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e >= p.n) { return; }
    let z = (e / p.hidden) * 4u * p.hidden + e % p.hidden;
    let k = p.hidden;
    let i = needle_sigmoid(xp[p.zoff + z] + hz[z]);
    let f = needle_sigmoid(xp[p.zoff + z + k] + hz[z + k]);
    let g = needle_tanh(xp[p.zoff + z + 2u * k] + hz[z + 2u * k]);
    let o = needle_sigmoid(xp[p.zoff + z + 3u * k] + hz[z + 3u * k]);
    let cn = f * c[e] + i * g;
    let hn = o * needle_tanh(cn);
    gates[p.zoff + z] = i;
    gates[p.zoff + z + k] = f;
    gates[p.zoff + z + 2u * k] = g;
    gates[p.zoff + z + 3u * k] = o;
    c[e] = cn;
    cs[p.hoff + e] = cn;
    h[e] = hn;
    hs[p.hoff + e] = hn;
}
