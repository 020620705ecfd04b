// Whole-buffer kernels with no host constants: fill, and the sum of split-K partials.
// include: common.wgsl

struct Params {
    n: u32,       // elements in this dispatch
    value: f32,   // fill value
    slices: u32,  // sum_slices: how many n-element slices to add up
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = p.value; }
}

// out[i] = sum over s of a[s * n + i]: adds up the partial products of a split-K matmul.
@compute @workgroup_size(256)
fn sum_slices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    var total = 0.0;
    for (var s = 0u; s < p.slices; s++) { total += a[s * p.n + i]; }
    out[i] = total;
}
