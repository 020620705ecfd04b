// Workgroup-wide sum and max with subgroup operations (adapter feature `subgroup`):
// one subgroupAdd per subgroup, then every thread adds up the few per-subgroup results.
// The host picks this file or workgroup_reduce_shared.wgsl; both define Lane, wg_sum and
// wg_max, and need the constant WG (threads per workgroup, one dimension). wg_max
// propagates NaN: subgroupMax's handling of NaN is implementation-defined, so a NaN in any
// lane is flagged with subgroupAny and wins.
// include: math.wgsl

struct Lane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
}

var<workgroup> wg_partial: array<f32, WG>;  // one slot per subgroup (at most WG of them)

fn wg_sum(v: f32, lane: Lane) -> f32 {
    let s = subgroupAdd(v);
    if (lane.sg_lane == 0u) { wg_partial[lane.sg_id] = s; }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < lane.sg_count; i++) { total += wg_partial[i]; }
    workgroupBarrier();  // wg_partial may be reused by the next call
    return total;
}

fn wg_max(v: f32, lane: Lane) -> f32 {
    let s = select(subgroupMax(v), needle_nan(), subgroupAny(needle_isnan(v)));
    if (lane.sg_lane == 0u) { wg_partial[lane.sg_id] = s; }
    workgroupBarrier();
    var best = wg_partial[0];
    for (var i = 1u; i < lane.sg_count; i++) { best = needle_max(best, wg_partial[i]); }
    workgroupBarrier();
    return best;
}
