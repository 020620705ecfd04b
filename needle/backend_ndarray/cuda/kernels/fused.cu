// Fused kernels (contract.FUSED_OPS), following numpy_backend.py's semantics exactly.
//
// Row ops (logsumexp, softmax, cross_entropy, layernorm and its dx) give each row to TPR
// threads of a 256-thread block: a warp for rows up to ~1k columns, the whole block for
// longer rows. Rows are re-read from global memory for each pass; they stay in L1/L2.
// Infinities and NaN behave as in PyTorch: the row max propagates NaN (Maximum), a
// logsumexp whose max is not finite is that max (+inf, -inf, NaN), and softmax /
// cross-entropy rows whose max is not finite come out NaN (inf - inf in exp(x - m)).
#include "common.cuh"

namespace needle {

// Row loop shared by the row kernels: `r` is this thread group's row, `lane` its index in
// the group. The loop variable is uniform across the block (group_reduce has barriers).
#define NEEDLE_ROW_LOOP(TPR)                                                   \
  constexpr int RPB = 256 / (TPR);                                             \
  const int lane = threadIdx.x % (TPR), sub = threadIdx.x / (TPR);             \
  for (i64 rb = blockIdx.x; rb * RPB < rows; rb += gridDim.x)

template <int TPR, class T>
__device__ __forceinline__ T row_max(const T* x, i64 cols, int lane, bool valid) {
  T m = neg_inf<T>();
  if (valid)
    for (i64 c = lane; c < cols; c += TPR) m = Maximum()(m, x[c]);
  return group_reduce<TPR, MaxOp>(m);
}

template <int TPR, class T>
__device__ __forceinline__ T row_sum_exp(const T* x, T m, i64 cols, int lane, bool valid) {
  T s = T(0);
  if (valid)
    for (i64 c = lane; c < cols; c += TPR) s += n_exp(x[c] - m);
  return group_reduce<TPR, SumOp>(s);
}

template <class T, int TPR>
__device__ void logsumexp(const T* a, T* out, i64 rows, i64 cols) {
  NEEDLE_ROW_LOOP(TPR) {
    const i64 r = rb * RPB + sub;
    const bool valid = r < rows;
    const T* x = a + (valid ? r : 0) * cols;
    const T m = row_max<TPR>(x, cols, lane, valid);
    const T s = row_sum_exp<TPR>(x, m, cols, lane, valid);
    if (valid && lane == 0) out[r] = is_finite(m) ? n_log(s) + m : m;
  }
}

template <class T, int TPR>
__device__ void softmax(const T* a, T* out, i64 rows, i64 cols) {
  NEEDLE_ROW_LOOP(TPR) {
    const i64 r = rb * RPB + sub;
    const bool valid = r < rows;
    const T* x = a + (valid ? r : 0) * cols;
    const T m = row_max<TPR>(x, cols, lane, valid);
    const T s = row_sum_exp<TPR>(x, m, cols, lane, valid);
    if (valid)
      for (i64 c = lane; c < cols; c += TPR) out[r * cols + c] = n_exp(x[c] - m) / s;
  }
}

// loss[r] = (max - x[r, label]) + log(sum(exp(x[r] - max))), which is logsumexp(x[r]) -
// x[r, label] with the large max cancelled before the small log is added (logits [2000,
// 1990] lose 4.5e-5 otherwise); grad[r, c] = softmax(x[r])[c] - (c == label)
template <class T, int TPR>
__device__ void cross_entropy(const T* logits, const T* labels, T* loss, T* grad, i64 rows,
                              i64 cols) {
  NEEDLE_ROW_LOOP(TPR) {
    const i64 r = rb * RPB + sub;
    const bool valid = r < rows;
    const T* x = logits + (valid ? r : 0) * cols;
    const T m = row_max<TPR>(x, cols, lane, valid);
    const T s = row_sum_exp<TPR>(x, m, cols, lane, valid);
    if (valid) {
      const T y = labels[r];  // (in range tested on the float: -0.5 and NaN are not)
      const bool in_range = y >= T(0) && y < T(cols);
      const i64 label = in_range ? (i64)y : -1;
      if (lane == 0) {
        const T picked = in_range ? x[label] : T(0) / T(0);  // NaN flags a bad label
        loss[r] = (m - picked) + n_log(s);
      }
      for (i64 c = lane; c < cols; c += TPR) {
        const T p = n_exp(x[c] - m) / s;
        grad[r * cols + c] = c == label ? p - T(1) : p;
      }
    }
  }
}

// out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(biased var + eps) (two passes)
template <class T, int TPR>
__device__ void layernorm(const T* xs, const T* weight, const T* bias, T* out, T* mean,
                          T* rstd, i64 rows, i64 cols, T eps) {
  NEEDLE_ROW_LOOP(TPR) {
    const i64 r = rb * RPB + sub;
    const bool valid = r < rows;
    const T* x = xs + (valid ? r : 0) * cols;
    T s = T(0);
    if (valid)
      for (i64 c = lane; c < cols; c += TPR) s += x[c];
    const T mu = group_reduce<TPR, SumOp>(s) / T(cols);
    T q = T(0);
    if (valid)
      for (i64 c = lane; c < cols; c += TPR) q += (x[c] - mu) * (x[c] - mu);
    const T var = group_reduce<TPR, SumOp>(q) / T(cols);
    const T rs = T(1) / n_sqrt(var + eps);
    if (valid) {
      if (lane == 0) { mean[r] = mu; rstd[r] = rs; }
      for (i64 c = lane; c < cols; c += TPR)
        out[r * cols + c] = (x[c] - mu) * rs * weight[c] + bias[c];
    }
  }
}

// dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat)) with gx = grad * weight
template <class T, int TPR>
__device__ void layernorm_bwd_dx(const T* grad, const T* xs, const T* weight, const T* mean,
                                 const T* rstd, T* dx, i64 rows, i64 cols) {
  NEEDLE_ROW_LOOP(TPR) {
    const i64 r = rb * RPB + sub;
    const bool valid = r < rows;
    const i64 base = (valid ? r : 0) * cols;
    const T mu = valid ? mean[r] : T(0), rs = valid ? rstd[r] : T(0);
    T sg = T(0), sgx = T(0);
    if (valid)
      for (i64 c = lane; c < cols; c += TPR) {
        const T gx = grad[base + c] * weight[c];
        sg += gx;
        sgx += gx * ((xs[base + c] - mu) * rs);
      }
    const T a = group_reduce<TPR, SumOp>(sg) / T(cols);
    const T b = group_reduce<TPR, SumOp>(sgx) / T(cols);
    if (valid)
      for (i64 c = lane; c < cols; c += TPR) {
        const T xhat = (xs[base + c] - mu) * rs;
        dx[base + c] = rs * (grad[base + c] * weight[c] - a - xhat * b);
      }
  }
}

// Column sums for dweight = sum_r grad * xhat and dbias = sum_r grad. Block (32, 8):
// x walks columns (coalesced), y walks rows; gridDim.y splits the rows, each split
// writing partial sums to dw[split * cols + c] (summed afterwards by colsum).
template <class T>
__device__ void layernorm_bwd_params(const T* grad, const T* xs, const T* mean, const T* rstd,
                                     T* dw, T* db, i64 rows, i64 cols, i64 rows_per_split) {
  __shared__ T tw[8][33], tb[8][33];
  const i64 c = (i64)blockIdx.x * 32 + threadIdx.x;
  const i64 r0 = (i64)blockIdx.y * rows_per_split;
  const i64 r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
  T sw = T(0), sb = T(0);
  if (c < cols)
    for (i64 r = r0 + threadIdx.y; r < r1; r += 8) {
      const T g = grad[r * cols + c];
      sw += g * ((xs[r * cols + c] - mean[r]) * rstd[r]);
      sb += g;
    }
  tw[threadIdx.y][threadIdx.x] = sw;
  tb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < 8; ++k) { sw += tw[k][threadIdx.x]; sb += tb[k][threadIdx.x]; }
    dw[(i64)blockIdx.y * cols + c] = sw;
    db[(i64)blockIdx.y * cols + c] = sb;
  }
}

// out[c] = sum_r a[r, c] for a short (rows, cols) matrix of partial sums
template <class T>
__device__ void colsum(const T* a, T* out, i64 rows, i64 cols) {
  for (i64 c = global_thread(); c < cols; c += grid_threads()) {
    T s = T(0);
    for (i64 r = 0; r < rows; ++r) s += a[r * cols + c];
    out[c] = s;
  }
}

template <class T, bool RELU>
__device__ void bias_act(const T* a, const T* bias, T* out, i64 n, i64 cols) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) {
    const T y = a[i] + bias[(u64)i % (u64)cols];
    out[i] = RELU ? Relu()(y) : y;
  }
}

// BatchNorm with given statistics over (outer, channels, inner) data; x_bias may be null
template <class T, bool RELU>
__device__ void batchnorm(const T* x, const T* x_bias, const T* mean, const T* var,
                          const T* weight, const T* bias, T* out, i64 n, i64 channels,
                          i64 inner, T eps) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) {
    const i64 c = (i64)(((u64)i / (u64)inner) % (u64)channels);
    const T v = x_bias ? x[i] + x_bias[c] : x[i];
    const T y = (v - mean[c]) / n_sqrt(var[c] + eps) * weight[c] + bias[c];
    out[i] = RELU ? Relu()(y) : y;
  }
}

// BatchNorm's running statistics, in place, one thread per channel: each product and sum
// rounded as NumPy rounds the contract's expressions (no FMA contraction)
template <class T>
__device__ void running_stats(T* running_mean, T* running_var, const T* mean, const T* var,
                              T momentum, T keep, T unbiased, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) {
    running_mean[i] = add_rn(mul_rn(running_mean[i], keep), mul_rn(mean[i], momentum));
    running_var[i] = add_rn(mul_rn(running_var[i], keep),
                            mul_rn(mul_rn(var[i], unbiased), momentum));
  }
}

// Offset of a channel's j-th value in (outer, channels, inner) data, from the channel's
// start: (j / inner) * step + j % inner, step = channels * inner (32-bit division where the
// values fit, as they do in practice: a 64-bit one costs several times more)
__device__ __forceinline__ i64 bn_offset(i64 j, i64 inner, i64 step) {
  if (j <= 0xffffffffLL && inner <= 0xffffffffLL) {
    const unsigned q = (unsigned)j / (unsigned)inner;
    return (i64)q * step + (i64)((unsigned)j - q * (unsigned)inner);
  }
  return (j / inner) * step + j % inner;
}

// Training-mode BatchNorm of (outer, channels, inner) data plus a per-channel x_bias (a
// preceding conv's; may be null), one 256-thread block per channel: the mean, then the
// biased variance around it (two passes, no cancellation), then the normalised output,
// all in one launch. Thread 0 writes the channel's mean, var and rstd and, with run_mean
// non-null, updates the running statistics as running_stats does.
template <class T, bool RELU>
__device__ void batchnorm_train(const T* x, const T* x_bias, const T* w, const T* b, T* out,
                                T* mean, T* var, T* rstd, T* run_mean, T* run_var, T momentum,
                                T keep, T unbiased, i64 outer, i64 channels, i64 inner, T eps) {
  const i64 count = outer * inner, step = channels * inner;
  for (i64 c = blockIdx.x; c < channels; c += gridDim.x) {
    const T* xc = x + c * inner;
    const T xb = x_bias ? x_bias[c] : T(0);
    T s = T(0);
    for (i64 j = threadIdx.x; j < count; j += 256) s += xc[bn_offset(j, inner, step)] + xb;
    const T mu = group_reduce<256, SumOp>(s) / T(count);
    T q = T(0);
    for (i64 j = threadIdx.x; j < count; j += 256) {
      const T d = xc[bn_offset(j, inner, step)] + xb - mu;
      q += d * d;
    }
    const T v = group_reduce<256, SumOp>(q) / T(count);
    const T r = T(1) / n_sqrt(v + eps);
    if (threadIdx.x == 0) {
      mean[c] = mu;
      var[c] = v;
      rstd[c] = r;
      if (run_mean) {
        run_mean[c] = add_rn(mul_rn(run_mean[c], keep), mul_rn(mu, momentum));
        run_var[c] = add_rn(mul_rn(run_var[c], keep), mul_rn(mul_rn(v, unbiased), momentum));
      }
    }
    const T scale = r * w[c], shift = b[c];
    for (i64 j = threadIdx.x; j < count; j += 256) {
      const i64 at = c * inner + bn_offset(j, inner, step);
      const T y = (x[at] + xb - mu) * scale + shift;
      out[at] = RELU ? Relu()(y) : y;
    }
  }
}

// Its gradient, one block per channel: with RELU the output gradient is first masked by
// out > 0 (the activation's output); dbias = sum g, dweight = sum g * xhat, then
// dx = weight * rstd / count * (count * g - dbias - xhat * dweight), and with dx_bias
// non-null the x_bias gradient, sum dx.
template <class T, bool RELU>
__device__ void batchnorm_train_bwd(const T* grad, const T* x, const T* x_bias, const T* out,
                                    const T* w, const T* mean, const T* rstd, T* dx, T* dw,
                                    T* db, T* dx_bias, i64 outer, i64 channels, i64 inner) {
  const i64 count = outer * inner, step = channels * inner;
  for (i64 c = blockIdx.x; c < channels; c += gridDim.x) {
    const T r = rstd[c], shift = (x_bias ? x_bias[c] : T(0)) - mean[c];
    T sg = T(0), sgx = T(0);
    for (i64 j = threadIdx.x; j < count; j += 256) {
      const i64 at = c * inner + bn_offset(j, inner, step);
      const T g = RELU && !(out[at] > T(0)) ? T(0) : grad[at];
      sg += g;
      sgx += g * ((x[at] + shift) * r);
    }
    sg = group_reduce<256, SumOp>(sg);
    sgx = group_reduce<256, SumOp>(sgx);
    if (threadIdx.x == 0) {
      db[c] = sg;
      dw[c] = sgx;
    }
    const T k = w[c] * r / T(count), n = T(count);
    T sdx = T(0);
    for (i64 j = threadIdx.x; j < count; j += 256) {
      const i64 at = c * inner + bn_offset(j, inner, step);
      const T g = RELU && !(out[at] > T(0)) ? T(0) : grad[at];
      const T d = k * (n * g - sg - (x[at] + shift) * r * sgx);
      dx[at] = d;
      sdx += d;
    }
    if (dx_bias) {
      sdx = group_reduce<256, SumOp>(sdx);
      if (threadIdx.x == 0) dx_bias[c] = sdx;
    }
  }
}

enum { SGD_WEIGHT_DECAY = 1, SGD_MOMENTUM = 2, SGD_FIRST_STEP = 4 };

// PyTorch's SGD, in place, on elements start, start + stride, ... of one tensor; each
// product and sum rounded as NumPy rounds it
template <class T>
__device__ void sgd(T* param, const T* grad, T* buf, T lr, T momentum, T weight_decay,
                    int flags, i64 n, i64 start, i64 stride) {
  for (i64 i = start; i < n; i += stride) {
    const T p = param[i];
    T g = grad[i];
    if (flags & SGD_WEIGHT_DECAY) g = add_rn(g, mul_rn(weight_decay, p));
    if (flags & SGD_MOMENTUM) {
      g = (flags & SGD_FIRST_STEP) ? g : add_rn(mul_rn(buf[i], momentum), g);
      buf[i] = g;
    }
    param[i] = add_rn(p, -mul_rn(lr, g));
  }
}

// PyTorch's Adam (L2 weight decay, bias-corrected), in place, on elements start, start +
// stride, ... of one tensor. one_minus_b1 = 1 - beta1 and bc1 = 1 - beta1 ** step are
// computed on the host in double, as NumPy does.
template <class T>
__device__ void adam(T* param, const T* grad, T* m, T* v, T lr, T beta1, T beta2,
                     T one_minus_b1, T one_minus_b2, T bc1, T bc2, T eps, T weight_decay,
                     int has_weight_decay, i64 n, i64 start, i64 stride) {
  for (i64 i = start; i < n; i += stride) {
    const T p = param[i];
    T g = grad[i];
    if (has_weight_decay) g = add_rn(g, mul_rn(weight_decay, p));
    const T mi = add_rn(mul_rn(m[i], beta1), mul_rn(one_minus_b1, g));
    const T vi = add_rn(mul_rn(v[i], beta2), mul_rn(mul_rn(one_minus_b2, g), g));
    m[i] = mi;
    v[i] = vi;
    const T m_hat = mi / bc1, v_hat = vi / bc2;
    param[i] = add_rn(p, -(mul_rn(lr, m_hat) / add_rn(n_sqrt(v_hat), eps)));
  }
}

// Many tensors' updates in one launch (the optimizers' *_update_many): the tensors travel in
// a struct passed by value (under CUDA's 4 KB of kernel parameters), and tensor t owns blocks
// first_block[t] .. first_block[t + 1] - 1, which stride over its elements.
constexpr int FOREACH_MAX = 32;

struct SgdList {
  u64 param[FOREACH_MAX], grad[FOREACH_MAX], buf[FOREACH_MAX];
  i64 size[FOREACH_MAX];
  int first_block[FOREACH_MAX + 1], flags[FOREACH_MAX], count;
};

struct AdamList {
  u64 param[FOREACH_MAX], grad[FOREACH_MAX], m[FOREACH_MAX], v[FOREACH_MAX];
  i64 size[FOREACH_MAX];
  double bc1[FOREACH_MAX], bc2[FOREACH_MAX];
  int first_block[FOREACH_MAX + 1], count;
};

// (this block's tensor, its first element, the stride over that tensor)
template <class List>
__device__ __forceinline__ int foreach_tensor(const List& list, i64& start, i64& stride) {
  int t = 0;
  while (t + 1 < list.count && list.first_block[t + 1] <= (int)blockIdx.x) ++t;
  start = (i64)(blockIdx.x - list.first_block[t]) * blockDim.x + threadIdx.x;
  stride = (i64)(list.first_block[t + 1] - list.first_block[t]) * blockDim.x;
  return t;
}

template <class T>
__device__ void sgd_many(const SgdList& list, T lr, T momentum, T weight_decay) {
  i64 start, stride;
  const int t = foreach_tensor(list, start, stride);
  sgd<T>((T*)list.param[t], (const T*)list.grad[t], (T*)list.buf[t], lr, momentum,
         weight_decay, list.flags[t], list.size[t], start, stride);
}

template <class T>
__device__ void adam_many(const AdamList& list, T lr, T beta1, T beta2, T one_minus_b1,
                          T one_minus_b2, T eps, T weight_decay, int has_weight_decay) {
  i64 start, stride;
  const int t = foreach_tensor(list, start, stride);
  adam<T>((T*)list.param[t], (const T*)list.grad[t], (T*)list.m[t], (T*)list.v[t], lr, beta1,
          beta2, one_minus_b1, one_minus_b2, (T)list.bc1[t], (T)list.bc2[t], eps, weight_decay,
          has_weight_decay, list.size[t], start, stride);
}

}  // namespace needle

// ---- entry points ---------------------------------------------------------------------
#define NEEDLE_ROW_KERNELS_TPR(T, sfx, TPR)                                                   \
  extern "C" __global__ void __launch_bounds__(256) needle_logsumexp_##sfx##_t##TPR(           \
      const T* a, T* out, needle::i64 rows, needle::i64 cols) {                                \
    needle::logsumexp<T, TPR>(a, out, rows, cols);                                             \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256) needle_softmax_##sfx##_t##TPR(             \
      const T* a, T* out, needle::i64 rows, needle::i64 cols) {                                \
    needle::softmax<T, TPR>(a, out, rows, cols);                                               \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256) needle_cross_entropy_##sfx##_t##TPR(       \
      const T* logits, const T* labels, T* loss, T* grad, needle::i64 rows, needle::i64 cols) { \
    needle::cross_entropy<T, TPR>(logits, labels, loss, grad, rows, cols);                     \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256) needle_layernorm_##sfx##_t##TPR(           \
      const T* x, const T* w, const T* b, T* out, T* mean, T* rstd, needle::i64 rows,          \
      needle::i64 cols, T eps) {                                                               \
    needle::layernorm<T, TPR>(x, w, b, out, mean, rstd, rows, cols, eps);                      \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256) needle_layernorm_bwd_dx_##sfx##_t##TPR(    \
      const T* grad, const T* x, const T* w, const T* mean, const T* rstd, T* dx,              \
      needle::i64 rows, needle::i64 cols) {                                                    \
    needle::layernorm_bwd_dx<T, TPR>(grad, x, w, mean, rstd, dx, rows, cols);                  \
  }

#define NEEDLE_BATCHNORM_TRAIN(T, sfx, act, RELU)                                              \
  extern "C" __global__ void __launch_bounds__(256) needle_batchnorm_train_##act##_##sfx(      \
      const T* x, const T* x_bias, const T* w, const T* b, T* out, T* mean, T* var, T* rstd,   \
      T* run_mean, T* run_var, T momentum, T keep, T unbiased, needle::i64 outer,              \
      needle::i64 channels, needle::i64 inner, T eps) {                                        \
    needle::batchnorm_train<T, RELU>(x, x_bias, w, b, out, mean, var, rstd, run_mean, run_var, \
                                     momentum, keep, unbiased, outer, channels, inner, eps);   \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256) needle_batchnorm_train_bwd_##act##_##sfx(  \
      const T* grad, const T* x, const T* x_bias, const T* out, const T* w, const T* mean,     \
      const T* rstd, T* dx, T* dw, T* db, T* dx_bias, needle::i64 outer, needle::i64 channels, \
      needle::i64 inner) {                                                                     \
    needle::batchnorm_train_bwd<T, RELU>(grad, x, x_bias, out, w, mean, rstd, dx, dw, db,      \
                                         dx_bias, outer, channels, inner);                     \
  }

#define NEEDLE_FUSED(T, sfx)                                                                   \
  NEEDLE_ROW_KERNELS_TPR(T, sfx, 32)                                                           \
  NEEDLE_ROW_KERNELS_TPR(T, sfx, 256)                                                          \
  extern "C" __global__ void __launch_bounds__(256) needle_layernorm_bwd_params_##sfx(         \
      const T* grad, const T* x, const T* mean, const T* rstd, T* dw, T* db, needle::i64 rows, \
      needle::i64 cols, needle::i64 rows_per_split) {                                          \
    needle::layernorm_bwd_params<T>(grad, x, mean, rstd, dw, db, rows, cols, rows_per_split);  \
  }                                                                                            \
  extern "C" __global__ void needle_colsum_##sfx(const T* a, T* out, needle::i64 rows,         \
                                                 needle::i64 cols) {                           \
    needle::colsum<T>(a, out, rows, cols);                                                     \
  }                                                                                            \
  extern "C" __global__ void needle_bias_act_identity_##sfx(const T* a, const T* bias, T* out, \
                                                            needle::i64 n, needle::i64 cols) { \
    needle::bias_act<T, false>(a, bias, out, n, cols);                                         \
  }                                                                                            \
  extern "C" __global__ void needle_bias_act_relu_##sfx(const T* a, const T* bias, T* out,     \
                                                        needle::i64 n, needle::i64 cols) {     \
    needle::bias_act<T, true>(a, bias, out, n, cols);                                          \
  }                                                                                            \
  extern "C" __global__ void needle_batchnorm_identity_##sfx(                                  \
      const T* x, const T* x_bias, const T* mean, const T* var, const T* weight, const T* bias, \
      T* out, needle::i64 n, needle::i64 channels, needle::i64 inner, T eps) {                  \
    needle::batchnorm<T, false>(x, x_bias, mean, var, weight, bias, out, n, channels, inner,    \
                                eps);                                                           \
  }                                                                                             \
  extern "C" __global__ void needle_batchnorm_relu_##sfx(                                      \
      const T* x, const T* x_bias, const T* mean, const T* var, const T* weight, const T* bias, \
      T* out, needle::i64 n, needle::i64 channels, needle::i64 inner, T eps) {                  \
    needle::batchnorm<T, true>(x, x_bias, mean, var, weight, bias, out, n, channels, inner,     \
                               eps);                                                            \
  }                                                                                             \
  NEEDLE_BATCHNORM_TRAIN(T, sfx, identity, false)                                              \
  NEEDLE_BATCHNORM_TRAIN(T, sfx, relu, true)                                                   \
  extern "C" __global__ void needle_running_stats_##sfx(                                       \
      T* running_mean, T* running_var, const T* mean, const T* var, T momentum, T keep,         \
      T unbiased, needle::i64 n) {                                                              \
    needle::running_stats<T>(running_mean, running_var, mean, var, momentum, keep, unbiased, n); \
  }                                                                                             \
  extern "C" __global__ void needle_sgd_##sfx(T* param, const T* grad, T* buf, T lr,           \
                                              T momentum, T weight_decay, int flags,           \
                                              needle::i64 n) {                                 \
    needle::sgd<T>(param, grad, buf, lr, momentum, weight_decay, flags, n,                     \
                   needle::global_thread(), needle::grid_threads());                           \
  }                                                                                            \
  extern "C" __global__ void needle_sgd_many_##sfx(const needle::SgdList list, T lr,           \
                                                   T momentum, T weight_decay) {               \
    needle::sgd_many<T>(list, lr, momentum, weight_decay);                                     \
  }                                                                                            \
  extern "C" __global__ void needle_adam_many_##sfx(                                           \
      const needle::AdamList list, T lr, T beta1, T beta2, T one_minus_b1, T one_minus_b2,     \
      T eps, T weight_decay, int has_weight_decay) {                                           \
    needle::adam_many<T>(list, lr, beta1, beta2, one_minus_b1, one_minus_b2, eps,              \
                         weight_decay, has_weight_decay);                                      \
  }                                                                                            \
  extern "C" __global__ void needle_adam_##sfx(                                                \
      T* param, const T* grad, T* m, T* v, T lr, T beta1, T beta2, T one_minus_b1,             \
      T one_minus_b2, T bc1, T bc2, T eps, T weight_decay, int has_weight_decay,               \
      needle::i64 n) {                                                                         \
    needle::adam<T>(param, grad, m, v, lr, beta1, beta2, one_minus_b1, one_minus_b2, bc1, bc2, \
                    eps, weight_decay, has_weight_decay, n, needle::global_thread(),           \
                    needle::grid_threads());                                                   \
  }

NEEDLE_FUSED(float, f32)
NEEDLE_FUSED(double, f64)
