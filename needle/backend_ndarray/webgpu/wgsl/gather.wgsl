// Integer indexing (Embedding and its gradient), one thread per element of out (take) or
// per distinct target (scatter_add), 256 threads per workgroup over a 2-D grid.
// take: out[i] = a[idx[i]]. scatter_add: WGSL has no float atomics, so the host sorts the
// index (contract.scatter_segments) and the thread of target t adds a[order[j]] for j in
// [starts[t], starts[t + 1]), in order, into out[targets[t]]: deterministic sums.
// include: common.wgsl

struct Params {
    n: u32,  // take: elements in this dispatch; scatter_add: distinct targets
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;      // take: positions in a
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> starts: array<u32>;   // scatter_add: n + 1 entries
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read> order: array<u32>;

@compute @workgroup_size(256)
fn take(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = a[idx[i]]; }
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = element(wid, nwg, lid);
    if (t >= p.n) { return; }
    var acc = 0.0;
    for (var j = starts[t]; j < starts[t + 1u]; j++) { acc += a[order[j]]; }
    let to = targets[t];
    out[to] = out[to] + acc;
}
