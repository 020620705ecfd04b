// Row reductions: `a` is a row-major (rows, row_len) matrix; out[r] = sum or max of row r.
// Host constants: OP (REDUCE_SUM or REDUCE_MAX), WG (threads per workgroup).
// max propagates NaN, as np.max does.
// include: math.wgsl
// include: workgroup_reduce.wgsl

const REDUCE_SUM = 0u;
const REDUCE_MAX = 1u;

struct Params {
    rows: u32,
    row_len: u32,
    chunk_len: u32,  // reduce_rows: each workgroup reduces one chunk of one row
    chunks: u32,     // chunks per row; out holds rows * chunks partial results
    a_off: u32,      // first element of row 0 in the bound window of a
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn identity() -> f32 {
    return select(0.0, -needle_inf(), OP == REDUCE_MAX);
}

fn combine(x: f32, y: f32) -> f32 {
    return select(x + y, needle_max(x, y), OP == REDUCE_MAX);
}

// Long rows: one workgroup per (row, chunk); each thread folds a strided share, then the
// workgroup combines the shares (subgroup operations where the adapter has them).
@compute @workgroup_size(WG)
fn reduce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               lane: Lane) {
    let g = group_index(wid, nwg);
    if (g >= p.rows * p.chunks) { return; }  // uniform: the same for the whole workgroup
    let row = g / p.chunks;
    let start = (g % p.chunks) * p.chunk_len;
    let end = min(start + p.chunk_len, p.row_len);
    let base = p.a_off + row * p.row_len;
    var acc = identity();
    for (var i = start + lane.index; i < end; i += WG) { acc = combine(acc, a[base + i]); }
    if (OP == REDUCE_MAX) { acc = wg_max(acc, lane); } else { acc = wg_sum(acc, lane); }
    if (lane.index == 0u) { out[g] = acc; }
}

// Short rows: one thread per row, so many tiny rows do not each occupy a workgroup.
@compute @workgroup_size(WG)
fn reduce_short_rows(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg) * WG + lid;
    if (row >= p.rows) { return; }
    let base = p.a_off + row * p.row_len;
    var acc = identity();
    for (var i = 0u; i < p.row_len; i++) { acc = combine(acc, a[base + i]); }
    out[row] = acc;
}
