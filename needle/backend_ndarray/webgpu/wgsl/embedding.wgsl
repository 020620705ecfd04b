// Embedding with its ids read on the device (stored as floats), one thread per element of
// the (n, dim) rows, 256 threads per workgroup over a 2-D grid.
// embedding: out[i, j] = weight[ids[i], j]; an id outside [0, rows) gives NaN.
// embedding_backward: dweight[ids[i], j] += grad[i, j]. WGSL has no float atomics: each add
// is a compare-exchange loop on the element's bits, so repeated ids sum in no fixed order
// (the host zeroes dweight first); an id outside [0, rows) adds nothing.
// include: common.wgsl

struct Params {
    n: u32,
    rows: u32,
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;  // weight, or grad
@group(0) @binding(2) var<storage, read> ids: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> dweight: array<atomic<u32>>;

fn in_range(id: f32) -> bool {
    return id >= 0.0 && id < f32(p.rows);
}

@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e >= p.n * p.dim) { return; }
    let id = ids[e / p.dim];
    if (in_range(id)) {
        out[e] = values[u32(id) * p.dim + e % p.dim];
    } else {
        out[e] = needle_nan();
    }
}

@compute @workgroup_size(256)
fn embedding_backward(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e >= p.n * p.dim) { return; }
    let id = ids[e / p.dim];
    if (!in_range(id)) { return; }
    let at = u32(id) * p.dim + e % p.dim;
    var old = atomicLoad(&dweight[at]);
    loop {
        let swap = atomicCompareExchangeWeak(&dweight[at], old,
                                             bitcast<u32>(bitcast<f32>(old) + values[e]));
        if (swap.exchanged) { break; }
        old = swap.old_value;
    }
}
