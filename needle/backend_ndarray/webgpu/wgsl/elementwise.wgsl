// Elementwise kernels: one thread per element, 256 threads per workgroup, over a 2-D grid
// of workgroups (see group_index) so more than 65535 * 256 elements fit one dispatch.
// Host constant: OP, a UNARY_* (unary, bias_act) or BINARY_* (binary, scalar) name from
// math.wgsl (select uses none, but the module needs OP declared: the host passes
// BINARY_NE, the comparison select makes with 0).
// include: math.wgsl

struct Params {
    n: u32,       // elements in this dispatch
    scalar: f32,  // the right operand of `scalar`
    cols: u32,    // bias_act: row length
    col0: u32,    // bias_act: column of this dispatch's first element
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> cond: array<f32>;

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = needle_unary(OP, a[i]); }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = needle_binary(OP, a[i], b[i]); }
}

@compute @workgroup_size(256)
fn scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = needle_binary(OP, a[i], p.scalar); }
}

// out[r, c] = OP(a[r, c] + b[c]) for rows of p.cols elements (the bias is b).
@compute @workgroup_size(256)
fn bias_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) { out[i] = needle_unary(OP, a[i] + b[(p.col0 + i) % p.cols]); }
}

// out[i] = cond[i] != 0 ? a[i] : b[i]: a true select, so the branch not taken never leaks
// its NaN. Not named `select`, which would shadow WGSL's builtin. A NaN cond selects a, as
// NumPy's `cond != 0` does (tested by bits: a shader compiler may assume no NaN).
@compute @workgroup_size(256)
fn select_ab(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < p.n) {
        let c = cond[i];
        out[i] = select(b[i], a[i], c != 0.0 || needle_isnan(c));
    }
}
