// Row reductions: `a` is a row-major (rows, cols) matrix, out[r] = op over row r.
//
// TPR (threads per row) adapts the kernel to the row length: 1 for very short rows (one
// thread walks a row), 32 for medium rows (a warp per row, shuffle tree), 256 for long
// rows (the whole block, shuffles then shared memory). Blocks are always 256 threads.
// A few very long rows (a whole-array reduction arrives as one row of N) are also split
// along the row over gridDim.y: each block writes a partial to out[r * splits + s], and
// the host runs this kernel again over the (rows, splits) partials: a two-pass grid-wide
// reduction with deterministic order.
#include "common.cuh"

namespace needle {

template <class Op, class T, int TPR>
__device__ void reduce_rows(const T* a, T* out, i64 rows, i64 cols, i64 chunk) {
  constexpr int RPB = 256 / TPR;  // rows per block
  const int lane = threadIdx.x % TPR, sub = threadIdx.x / TPR;
  const i64 start = (i64)blockIdx.y * chunk;
  const i64 end = start + chunk < cols ? start + chunk : cols;
  // rb is uniform across the block, so group_reduce's barriers are reached by all
  for (i64 rb = blockIdx.x; rb * RPB < rows; rb += gridDim.x) {
    const i64 r = rb * RPB + sub;
    T acc = Op::template identity<T>();
    if (r < rows) {
      const T* row = a + r * cols;
      for (i64 c = start + lane; c < end; c += TPR) acc = Op()(acc, row[c]);
    }
    acc = group_reduce<TPR, Op>(acc);
    if (lane == 0 && r < rows) out[r * gridDim.y + blockIdx.y] = acc;
  }
}

}  // namespace needle

#define NEEDLE_REDUCE_T(name, Op, T, sfx, TPR)                                              \
  extern "C" __global__ void __launch_bounds__(256) needle_reduce_##name##_##sfx##_t##TPR(   \
      const T* a, T* out, needle::i64 rows, needle::i64 cols, needle::i64 chunk) {           \
    needle::reduce_rows<needle::Op, T, TPR>(a, out, rows, cols, chunk);                      \
  }
#define NEEDLE_REDUCE(name, Op, T, sfx) \
  NEEDLE_REDUCE_T(name, Op, T, sfx, 1) NEEDLE_REDUCE_T(name, Op, T, sfx, 32) NEEDLE_REDUCE_T(name, Op, T, sfx, 256)

NEEDLE_REDUCE(sum, SumOp, float, f32)
NEEDLE_REDUCE(sum, SumOp, double, f64)
NEEDLE_REDUCE(max, MaxOp, float, f32)
NEEDLE_REDUCE(max, MaxOp, double, f64)
