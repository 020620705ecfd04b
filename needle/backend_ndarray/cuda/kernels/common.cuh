// Scalar math shared by every Needle CUDA kernel: one functor per op of the backend
// contract (needle/backend_ndarray/contract.py), plus the warp/block reduction helpers.
// Kernels and generated code include this file; scalar math is written here only once.
#pragma once

namespace needle {

typedef long long i64;
typedef unsigned long long u64;

// ---- float / double overloads, so templates pick the precision from T -----------------
__device__ __forceinline__ float n_exp(float x) { return expf(x); }
__device__ __forceinline__ double n_exp(double x) { return exp(x); }
__device__ __forceinline__ float n_log(float x) { return logf(x); }
__device__ __forceinline__ double n_log(double x) { return log(x); }
__device__ __forceinline__ float n_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double n_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float n_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double n_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float n_sin(float x) { return sinf(x); }
__device__ __forceinline__ double n_sin(double x) { return sin(x); }
__device__ __forceinline__ float n_cos(float x) { return cosf(x); }
__device__ __forceinline__ double n_cos(double x) { return cos(x); }
__device__ __forceinline__ float n_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double n_abs(double x) { return fabs(x); }
__device__ __forceinline__ float n_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double n_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float n_trunc(float x) { return truncf(x); }
__device__ __forceinline__ double n_trunc(double x) { return trunc(x); }
__device__ __forceinline__ float n_floor(float x) { return floorf(x); }
__device__ __forceinline__ double n_floor(double x) { return floor(x); }

// Rounded (never fused) multiply/add: the optimizer kernels match NumPy's separately
// rounded `buf *= m; buf += g` bit for bit instead of contracting them into one FMA.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <class T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
  return __longlong_as_double(0xfff0000000000000LL);
}
// false for +-inf and NaN (a NaN compares false with everything)
template <class T> __device__ __forceinline__ bool is_finite(T x) { return n_abs(x) < -neg_inf<T>(); }

// ---- unary ops (contract.UNARY_OPS) ---------------------------------------------------
struct Neg { template <class T> __device__ T operator()(T x) const { return -x; } };
struct Exp { template <class T> __device__ T operator()(T x) const { return n_exp(x); } };
struct Log { template <class T> __device__ T operator()(T x) const { return n_log(x); } };
struct Tanh { template <class T> __device__ T operator()(T x) const { return n_tanh(x); } };
struct Sqrt { template <class T> __device__ T operator()(T x) const { return n_sqrt(x); } };
struct Abs { template <class T> __device__ T operator()(T x) const { return n_abs(x); } };
struct Sin { template <class T> __device__ T operator()(T x) const { return n_sin(x); } };
struct Cos { template <class T> __device__ T operator()(T x) const { return n_cos(x); } };
// NaN must stay NaN, as np.maximum(x, 0) keeps it: hence `x < 0` rather than `x > 0`.
struct Relu { template <class T> __device__ T operator()(T x) const { return x < T(0) ? T(0) : x; } };
struct Sigmoid {
  // exp of a non-positive number only: never overflows (NumPy uses exp(-logaddexp(0, -x)))
  template <class T> __device__ T operator()(T x) const {
    if (x >= T(0)) return T(1) / (T(1) + n_exp(-x));
    T e = n_exp(x);
    return e / (T(1) + e);
  }
};

// ---- binary ops (contract.BINARY_OPS); comparisons give 1 / 0 in T ---------------------
struct Add { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> __device__ T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> __device__ T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> __device__ T operator()(T a, T b) const { return a / b; } };
struct Pow { template <class T> __device__ T operator()(T a, T b) const { return n_pow(a, b); } };
// NaN-propagating like np.maximum / np.minimum (fmaxf / fminf would drop the NaN); the max
// reduction (MaxOp) and the row max of the fused kernels use Maximum too
struct Maximum {
  template <class T> __device__ T operator()(T a, T b) const { return (a > b || a != a) ? a : b; }
};
struct Minimum {
  template <class T> __device__ T operator()(T a, T b) const { return (a < b || a != a) ? a : b; }
};
struct Eq { template <class T> __device__ T operator()(T a, T b) const { return T(a == b); } };
struct Ne { template <class T> __device__ T operator()(T a, T b) const { return T(a != b); } };
struct Lt { template <class T> __device__ T operator()(T a, T b) const { return T(a < b); } };
struct Le { template <class T> __device__ T operator()(T a, T b) const { return T(a <= b); } };
struct Gt { template <class T> __device__ T operator()(T a, T b) const { return T(a > b); } };
struct Ge { template <class T> __device__ T operator()(T a, T b) const { return T(a >= b); } };

// ---- reductions (contract.REDUCE_OPS): an op plus its identity --------------------------
struct SumOp {
  template <class T> __device__ static T identity() { return T(0); }
  template <class T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  template <class T> __device__ static T identity() { return neg_inf<T>(); }
  template <class T> __device__ T operator()(T a, T b) const { return Maximum()(a, b); }
};

// Butterfly reduction over groups of `width` lanes (a power of two <= 32); every lane of
// the warp must call it, and every lane of a group ends with the group's result.
template <class Op, class T>
__device__ __forceinline__ T warp_reduce(T v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v = Op()(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduction over the TPR threads that share one row (TPR = 1, 32 or the whole block of
// 256). Every thread of the block must call it; all of a group get the result.
template <int TPR, class Op, class T>
__device__ __forceinline__ T group_reduce(T v) {
  if constexpr (TPR == 1) {
    return v;
  } else if constexpr (TPR <= 32) {
    return warp_reduce<Op>(v, TPR);
  } else {
    __shared__ T partial[TPR / 32];
    v = warp_reduce<Op>(v);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    v = partial[0];
#pragma unroll
    for (int w = 1; w < TPR / 32; ++w) v = Op()(v, partial[w]);
    __syncthreads();  // `partial` is reused by the next call
    return v;
  }
}

// Grid-stride loop bounds in 64-bit: sizes reach past 2^31 elements.
__device__ __forceinline__ i64 global_thread() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_threads() { return (i64)gridDim.x * blockDim.x; }

}  // namespace needle
