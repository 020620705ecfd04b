// Strided copies between a compact buffer and a view (shape, strides, offset) of another:
// compact (gather), ewise_setitem (scatter) and scalar_setitem (scatter a constant).
//
// The view is passed as plain scalar arguments (rank <= 8, dims right-aligned, signed
// 64-bit strides because flips make them negative) so a launch needs no host-to-device
// copy. The host first merges contiguous dims, so rank is usually 1-3. Index math runs
// in 32 bits (I = unsigned) when the view has < 2^32 elements: 64-bit division is slow.
#include "common.cuh"

namespace needle {

constexpr int MAX_DIMS = 8;

struct View {
  int first;  // dims [first, MAX_DIMS) are used
  i64 offset;
  i64 shape[MAX_DIMS];
  i64 stride[MAX_DIMS];
};

#define NEEDLE_VIEW_PARAMS                                                                 \
  int ndim, needle::i64 offset, needle::i64 d0, needle::i64 d1, needle::i64 d2,            \
      needle::i64 d3, needle::i64 d4, needle::i64 d5, needle::i64 d6, needle::i64 d7,      \
      needle::i64 s0, needle::i64 s1, needle::i64 s2, needle::i64 s3, needle::i64 s4,      \
      needle::i64 s5, needle::i64 s6, needle::i64 s7
#define NEEDLE_VIEW_ARGS ndim, offset, d0, d1, d2, d3, d4, d5, d6, d7, s0, s1, s2, s3, s4, s5, s6, s7

__device__ __forceinline__ View make_view(NEEDLE_VIEW_PARAMS) {
  View v;
  v.first = MAX_DIMS - ndim;
  v.offset = offset;
  v.shape[0] = d0; v.shape[1] = d1; v.shape[2] = d2; v.shape[3] = d3;
  v.shape[4] = d4; v.shape[5] = d5; v.shape[6] = d6; v.shape[7] = d7;
  v.stride[0] = s0; v.stride[1] = s1; v.stride[2] = s2; v.stride[3] = s3;
  v.stride[4] = s4; v.stride[5] = s5; v.stride[6] = s6; v.stride[7] = s7;
  return v;
}

// Element offset of the view's i-th element in row-major order. The loop is unrolled
// with constant indices so the View stays in registers.
template <class I>
__device__ __forceinline__ i64 view_offset(const View& v, I i) {
  i64 off = v.offset;
#pragma unroll
  for (int d = MAX_DIMS - 1; d >= 0; --d) {
    if (d >= v.first) {
      const I dim = (I)v.shape[d];
      const I q = i / dim;
      off += (i64)(i - q * dim) * v.stride[d];
      i = q;
    }
  }
  return off;
}

template <class T, class I>
__device__ void compact(const T* a, T* out, i64 n, const View& v) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = a[view_offset(v, (I)i)];
}

template <class T, class I>
__device__ void ewise_setitem(const T* a, T* out, i64 n, const View& v) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[view_offset(v, (I)i)] = a[i];
}

template <class T, class I>
__device__ void scalar_setitem(T value, T* out, i64 n, const View& v) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[view_offset(v, (I)i)] = value;
}

}  // namespace needle

#define NEEDLE_MOVEMENT(T, sfx, I, isfx)                                                    \
  extern "C" __global__ void needle_compact_##sfx##_##isfx(const T* a, T* out, needle::i64 n, \
                                                           NEEDLE_VIEW_PARAMS) {            \
    needle::compact<T, I>(a, out, n, needle::make_view(NEEDLE_VIEW_ARGS));                  \
  }                                                                                         \
  extern "C" __global__ void needle_ewise_setitem_##sfx##_##isfx(                           \
      const T* a, T* out, needle::i64 n, NEEDLE_VIEW_PARAMS) {                              \
    needle::ewise_setitem<T, I>(a, out, n, needle::make_view(NEEDLE_VIEW_ARGS));            \
  }                                                                                         \
  extern "C" __global__ void needle_scalar_setitem_##sfx##_##isfx(                          \
      T value, T* out, needle::i64 n, NEEDLE_VIEW_PARAMS) {                                 \
    needle::scalar_setitem<T, I>(value, out, n, needle::make_view(NEEDLE_VIEW_ARGS));       \
  }

NEEDLE_MOVEMENT(float, f32, unsigned int, i32)
NEEDLE_MOVEMENT(float, f32, needle::u64, i64)
NEEDLE_MOVEMENT(double, f64, unsigned int, i32)
NEEDLE_MOVEMENT(double, f64, needle::u64, i64)

// Up to four unrelated byte ranges copied by one launch: a replayed device graph's
// arguments into its own input buffers, or its results out (one driver copy per range
// would cost the host ~8 us each). Block row y copies range y; the blocks of a row stride
// over it in 16-byte (or 4-byte) words where both addresses allow, the tail in bytes.
namespace needle {
__device__ __forceinline__ void copy_range(char* d, const char* s, i64 n) {
  i64 head = 0;  // bytes copied in words
  if ((((u64)d | (u64)s) & 15) == 0) {
    head = n / 16 * 16;
    for (i64 i = global_thread(); i < n / 16; i += grid_threads())
      ((uint4*)d)[i] = ((const uint4*)s)[i];
  } else if ((((u64)d | (u64)s) & 3) == 0) {
    head = n / 4 * 4;
    for (i64 i = global_thread(); i < n / 4; i += grid_threads())
      ((unsigned*)d)[i] = ((const unsigned*)s)[i];
  }
  for (i64 i = head + global_thread(); i < n; i += grid_threads()) d[i] = s[i];
}
}  // namespace needle

extern "C" __global__ void needle_copy_ranges4(char* d0, const char* s0, needle::i64 n0,
                                               char* d1, const char* s1, needle::i64 n1,
                                               char* d2, const char* s2, needle::i64 n2,
                                               char* d3, const char* s3, needle::i64 n3) {
  switch (blockIdx.y) {
    case 0: needle::copy_range(d0, s0, n0); break;
    case 1: needle::copy_range(d1, s1, n1); break;
    case 2: needle::copy_range(d2, s2, n2); break;
    default: needle::copy_range(d3, s3, n3); break;
  }
}
