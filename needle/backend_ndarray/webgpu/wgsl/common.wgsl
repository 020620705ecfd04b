// Helpers shared by every kernel.
//
// A dispatch holds at most 65535 workgroups per dimension, so the host lays large 1-D
// launches out as a 2-D grid (x * y >= groups) and kernels recover a linear index here.

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// The linear index of this thread in a one-thread-per-element kernel of 256-thread groups.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return group_index(wid, nwg) * 256u + lid;
}

// WGSL has no literal for these; a bitcast at run time gives the IEEE values.
fn needle_nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn needle_inf() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

// NaN and infinity tests on the bits: comparisons with NaN operands are not dependable in
// WGSL (implementations may assume there are none), bit patterns are.
fn needle_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn needle_isfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
