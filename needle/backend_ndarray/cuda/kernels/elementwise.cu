// Elementwise kernels: unary, binary, scalar ops, select and fill, over flat compact buffers.
// One grid-stride loop per kind; the op is a functor from common.cuh. Entry points are
// extern "C" so cached cubins can be loaded by name (kernels.py lists every one).
#include "common.cuh"

namespace needle {

template <class Op, class T>
__device__ void unary_map(const T* a, T* out, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = Op()(a[i]);
}

template <class Op, class T>
__device__ void binary_map(const T* a, const T* b, T* out, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = Op()(a[i], b[i]);
}

template <class Op, class T>
__device__ void scalar_map(const T* a, T value, T* out, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = Op()(a[i], value);
}

// A true select: the branch not taken is never read into out, so its NaN does not leak.
template <class T>
__device__ void select_map(const T* cond, const T* a, const T* b, T* out, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = cond[i] != T(0) ? a[i] : b[i];
}

template <class T>
__device__ void fill(T* out, T value, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = value;
}

}  // namespace needle

#define NEEDLE_UNARY_T(name, Op, T, sfx)                                                   \
  extern "C" __global__ void needle_unary_##name##_##sfx(const T* a, T* out, needle::i64 n) { \
    needle::unary_map<needle::Op>(a, out, n);                                              \
  }
#define NEEDLE_BINARY_T(name, Op, T, sfx)                                                  \
  extern "C" __global__ void needle_binary_##name##_##sfx(const T* a, const T* b, T* out,  \
                                                          needle::i64 n) {                 \
    needle::binary_map<needle::Op>(a, b, out, n);                                          \
  }                                                                                        \
  extern "C" __global__ void needle_scalar_##name##_##sfx(const T* a, T value, T* out,     \
                                                          needle::i64 n) {                 \
    needle::scalar_map<needle::Op>(a, value, out, n);                                      \
  }
#define NEEDLE_UNARY(name, Op) NEEDLE_UNARY_T(name, Op, float, f32) NEEDLE_UNARY_T(name, Op, double, f64)
#define NEEDLE_BINARY(name, Op) NEEDLE_BINARY_T(name, Op, float, f32) NEEDLE_BINARY_T(name, Op, double, f64)

NEEDLE_UNARY(neg, Neg)
NEEDLE_UNARY(exp, Exp)
NEEDLE_UNARY(log, Log)
NEEDLE_UNARY(tanh, Tanh)
NEEDLE_UNARY(sigmoid, Sigmoid)
NEEDLE_UNARY(sqrt, Sqrt)
NEEDLE_UNARY(relu, Relu)
NEEDLE_UNARY(abs, Abs)
NEEDLE_UNARY(sin, Sin)
NEEDLE_UNARY(cos, Cos)

NEEDLE_BINARY(add, Add)
NEEDLE_BINARY(sub, Sub)
NEEDLE_BINARY(mul, Mul)
NEEDLE_BINARY(div, Div)
NEEDLE_BINARY(pow, Pow)
NEEDLE_BINARY(maximum, Maximum)
NEEDLE_BINARY(minimum, Minimum)
NEEDLE_BINARY(eq, Eq)
NEEDLE_BINARY(ne, Ne)
NEEDLE_BINARY(lt, Lt)
NEEDLE_BINARY(le, Le)
NEEDLE_BINARY(gt, Gt)
NEEDLE_BINARY(ge, Ge)

extern "C" __global__ void needle_select_f32(const float* cond, const float* a, const float* b,
                                             float* out, needle::i64 n) {
  needle::select_map(cond, a, b, out, n);
}
extern "C" __global__ void needle_select_f64(const double* cond, const double* a, const double* b,
                                             double* out, needle::i64 n) {
  needle::select_map(cond, a, b, out, n);
}

extern "C" __global__ void needle_fill_f32(float* out, float value, needle::i64 n) {
  needle::fill(out, value, n);
}
extern "C" __global__ void needle_fill_f64(double* out, double value, needle::i64 n) {
  needle::fill(out, value, n);
}
