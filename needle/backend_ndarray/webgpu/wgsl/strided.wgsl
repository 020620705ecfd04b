// Strided copies between a compact buffer and an arbitrary view (shape, signed strides,
// offset) of another: compact (gather), ewise_setitem (scatter) and scalar_setitem.
// Views have at most 8 dimensions here; the host splits views with more, and views whose
// span exceeds one storage binding, into several dispatches.
// include: common.wgsl

struct Params {
    n: u32,       // elements of the view in this dispatch
    ndim: u32,
    offset: i32,  // of the view's first element, relative to the bound window
    value: f32,   // scalar_setitem
    base: u32,    // first element of the compact side, relative to its bound window
    pad0: u32,
    pad1: u32,
    pad2: u32,
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<i32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Position in the viewed buffer of the view's i-th element (row-major order).
fn view_position(i: u32) -> u32 {
    var rem = i;
    var pos = p.offset;
    for (var d = i32(p.ndim) - 1; d >= 0; d--) {
        let dim = p.shape[d / 4][d % 4];
        pos += i32(rem % dim) * p.strides[d / 4][d % 4];
        rem /= dim;
    }
    return u32(pos);
}

@compute @workgroup_size(256)
fn compact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { dst[p.base + i] = src[view_position(i)]; }
}

@compute @workgroup_size(256)
fn ewise_setitem(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { dst[view_position(i)] = src[p.base + i]; }
}

@compute @workgroup_size(256)
fn scalar_setitem(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { dst[view_position(i)] = p.value; }
}
