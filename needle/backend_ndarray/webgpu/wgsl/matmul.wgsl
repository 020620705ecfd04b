// Tiled matrix product C = A @ B over a batch, and conv2d as an implicit GEMM.
//
// Each workgroup computes a BM x BN block of C, stepping through K by BK: the A and B
// tiles of one step sit in workgroup memory (A transposed, so a thread reads its eight
// rows as two vec4) while the next step's tiles load into registers (two buffers, one
// barrier per step). Each thread accumulates 8 x 8 outputs: rows ty*4 + i and
// BM/2 + ty*4 + i, columns tx*4 + j and BN/2 + tx*4 + j (i, j < 4), which costs four vec4
// workgroup-memory reads per 64 multiply-adds.
//
// Written for what drivers compile well from SPIR-V/MSL: per-thread state in function
// locals indexed only by constants (so it stays in registers), the k loop unrolled by
// four, and at most two vec4 loads per thread per tile, in named registers.
//
// Host constants: BM, BN, BK with BM and BN each 8 * BK or 16 * BK. The host also
// prepends one matmul_io_*.wgsl, which declares the bindings a, b, c and how they are
// read and written:
//   load_a(bat, row, k, k_end) -> A[bat, row, k .. k+3], zero past row m or k_end
//   load_b(bat, k, col, k_end) -> B[bat, k, col .. col+3], zero outside
//   store_c(slice, row, col, v)   C[slice, row, col .. col+3] = v, inside only
// Split-K: with p.splits > 1 each split adds up p.k_split of K into its own slice of C
// (slice = split * p.batch + bat) and buffers.wgsl's sum_slices adds the slices.
// include: common.wgsl

struct Params {
    m: u32,
    k: u32,
    n: u32,
    k_split: u32,   // K per split, a multiple of BK
    splits: u32,
    batch0: u32,    // first batch of this dispatch (the grid's z holds at most 65535)
    batch: u32,     // batches in all
    pad0: u32,
    // conv2d only (matmul_io_conv*.wgsl): padded NHWC input h x w x c, ks x ks kernel
    h: u32,
    w: u32,
    c: u32,
    ks: u32,
    stride: u32,
    ho: u32,
    wo: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG = (BM / 8u) * (BN / 8u);
const TILE_A = BK * BM / 4u;  // vec4s in one A tile, stored as [k][m / 4]
const TILE_B = BK * BN / 4u;  // vec4s in one B tile, stored as [k][n / 4]
const LOADS_A = TILE_A / WG;  // vec4 loads per thread per tile: 1 or 2
const LOADS_B = TILE_B / WG;
const_assert LOADS_A * WG == TILE_A && LOADS_B * WG == TILE_B;
const_assert LOADS_A <= 2u && LOADS_B <= 2u && BK % 4u == 0u;

var<workgroup> tile_a: array<vec4<f32>, 2u * TILE_A>;
var<workgroup> tile_b: array<vec4<f32>, 2u * TILE_B>;

// The e-th vec4 of the A tile at (row0, k0): row e / (BK/4), columns 4 * (e % (BK/4)) + ..
fn fetch_a(bat: u32, row0: u32, k0: u32, k_end: u32, e: u32) -> vec4<f32> {
    return load_a(bat, row0 + e / (BK / 4u), k0 + (e % (BK / 4u)) * 4u, k_end);
}

fn fetch_b(bat: u32, col0: u32, k0: u32, k_end: u32, e: u32) -> vec4<f32> {
    return load_b(bat, k0 + e / (BN / 4u), col0 + (e % (BN / 4u)) * 4u, k_end);
}

// Four consecutive k of one row of A go to four rows of the transposed tile.
fn stash_a(buf: u32, e: u32, v: vec4<f32>) {
    let row = e / (BK / 4u);
    let at = buf * TILE_A + (e % (BK / 4u)) * BM + row / 4u;
    tile_a[at][row % 4u] = v.x;
    tile_a[at + BM / 4u][row % 4u] = v.y;
    tile_a[at + BM / 2u][row % 4u] = v.z;
    tile_a[at + 3u * BM / 4u][row % 4u] = v.w;
}

// acc += (8 rows of A at tile index ia) x (8 columns of B at tile index ib), one k.
fn rank1(acc: ptr<function, array<vec4<f32>, 16>>, ia: u32, ib: u32) {
    let a_lo = tile_a[ia];
    let a_hi = tile_a[ia + BM / 8u];
    let b_lo = tile_b[ib];
    let b_hi = tile_b[ib + BN / 8u];
    (*acc)[0] += a_lo.x * b_lo;
    (*acc)[1] += a_lo.x * b_hi;
    (*acc)[2] += a_lo.y * b_lo;
    (*acc)[3] += a_lo.y * b_hi;
    (*acc)[4] += a_lo.z * b_lo;
    (*acc)[5] += a_lo.z * b_hi;
    (*acc)[6] += a_lo.w * b_lo;
    (*acc)[7] += a_lo.w * b_hi;
    (*acc)[8] += a_hi.x * b_lo;
    (*acc)[9] += a_hi.x * b_hi;
    (*acc)[10] += a_hi.y * b_lo;
    (*acc)[11] += a_hi.y * b_hi;
    (*acc)[12] += a_hi.z * b_lo;
    (*acc)[13] += a_hi.z * b_hi;
    (*acc)[14] += a_hi.w * b_lo;
    (*acc)[15] += a_hi.w * b_hi;
}

fn store_row(slice: u32, row: u32, left: u32, right: u32, a: vec4<f32>, b: vec4<f32>) {
    store_c(slice, row, left, a);
    store_c(slice, row, right, b);
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let split = wid.z % p.splits;
    let bat = p.batch0 + wid.z / p.splits;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let k_begin = split * p.k_split;
    let k_end = min(k_begin + p.k_split, p.k);
    let steps = (k_end - k_begin + BK - 1u) / BK;
    let tx = lid % (BN / 8u);
    let ty = lid / (BN / 8u);
    var acc: array<vec4<f32>, 16>;

    // step 0's tiles straight into buffer 0
    var a0 = fetch_a(bat, row0, k_begin, k_end, lid);
    var a1 = vec4<f32>(0.0);
    var b0 = fetch_b(bat, col0, k_begin, k_end, lid);
    var b1 = vec4<f32>(0.0);
    if (LOADS_A > 1u) { a1 = fetch_a(bat, row0, k_begin, k_end, lid + WG); }
    if (LOADS_B > 1u) { b1 = fetch_b(bat, col0, k_begin, k_end, lid + WG); }
    stash_a(0u, lid, a0);
    if (LOADS_A > 1u) { stash_a(0u, lid + WG, a1); }
    tile_b[lid] = b0;
    if (LOADS_B > 1u) { tile_b[lid + WG] = b1; }
    workgroupBarrier();

    for (var s = 0u; s < steps; s++) {
        let more = s + 1u < steps;
        if (more) {  // issue the next step's loads before this step's arithmetic
            let k0 = k_begin + (s + 1u) * BK;
            a0 = fetch_a(bat, row0, k0, k_end, lid);
            b0 = fetch_b(bat, col0, k0, k_end, lid);
            if (LOADS_A > 1u) { a1 = fetch_a(bat, row0, k0, k_end, lid + WG); }
            if (LOADS_B > 1u) { b1 = fetch_b(bat, col0, k0, k_end, lid + WG); }
        }
        let buf = s % 2u;
        let ia = buf * TILE_A + ty;
        let ib = buf * TILE_B + tx;
        for (var kk = 0u; kk < BK; kk += 4u) {
            rank1(&acc, ia + kk * (BM / 4u), ib + kk * (BN / 4u));
            rank1(&acc, ia + (kk + 1u) * (BM / 4u), ib + (kk + 1u) * (BN / 4u));
            rank1(&acc, ia + (kk + 2u) * (BM / 4u), ib + (kk + 2u) * (BN / 4u));
            rank1(&acc, ia + (kk + 3u) * (BM / 4u), ib + (kk + 3u) * (BN / 4u));
        }
        if (more) {  // the other buffer was last read in step s - 1, before the barrier
            let next = 1u - buf;
            stash_a(next, lid, a0);
            if (LOADS_A > 1u) { stash_a(next, lid + WG, a1); }
            tile_b[next * TILE_B + lid] = b0;
            if (LOADS_B > 1u) { tile_b[next * TILE_B + lid + WG] = b1; }
        }
        workgroupBarrier();
    }

    let slice = split * p.batch + bat;
    let lo = row0 + ty * 4u;
    let hi = row0 + BM / 2u + ty * 4u;
    let left = col0 + tx * 4u;
    let right = col0 + BN / 2u + tx * 4u;
    store_row(slice, lo, left, right, acc[0], acc[1]);
    store_row(slice, lo + 1u, left, right, acc[2], acc[3]);
    store_row(slice, lo + 2u, left, right, acc[4], acc[5]);
    store_row(slice, lo + 3u, left, right, acc[6], acc[7]);
    store_row(slice, hi, left, right, acc[8], acc[9]);
    store_row(slice, hi + 1u, left, right, acc[10], acc[11]);
    store_row(slice, hi + 2u, left, right, acc[12], acc[13]);
    store_row(slice, hi + 3u, left, right, acc[14], acc[15]);
}
