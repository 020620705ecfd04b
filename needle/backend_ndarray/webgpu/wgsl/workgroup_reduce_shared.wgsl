// Workgroup-wide sum and max as a tree in workgroup memory: the fallback for adapters
// without the `subgroup` feature. Same interface as workgroup_reduce_subgroup.wgsl;
// WG must be a power of two. wg_max propagates NaN (needle_max).
// include: math.wgsl

struct Lane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> wg_partial: array<f32, WG>;

fn wg_sum(v: f32, lane: Lane) -> f32 {
    wg_partial[lane.index] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) { wg_partial[lane.index] += wg_partial[lane.index + s]; }
        workgroupBarrier();
    }
    let total = wg_partial[0];
    workgroupBarrier();
    return total;
}

fn wg_max(v: f32, lane: Lane) -> f32 {
    wg_partial[lane.index] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) {
            wg_partial[lane.index] = needle_max(wg_partial[lane.index], wg_partial[lane.index + s]);
        }
        workgroupBarrier();
    }
    let best = wg_partial[0];
    workgroupBarrier();
    return best;
}
