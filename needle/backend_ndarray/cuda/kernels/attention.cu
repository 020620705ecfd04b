// Fused scaled dot-product attention (flash-attention style, exact fp32/fp64 FMA): the
// (seq_q, seq_k) score matrix never reaches memory. Layout as the contract's `attention`:
// q (batch, seq_q, dim), k and v (batch, seq_k, dim), batch = batch x heads; `stats` holds
// each query row's log-sum-exp of its scaled scores, which the backward reuses.
//
// Work split: TPR threads share one row (a query, or a key in the dk/dv kernel) and each
// holds every TPR-th of its D columns in registers (interleaved, so the TPR lanes read
// neighbouring words of a shared tile: no bank conflicts); dot products end in a TPR-lane
// butterfly. A block takes ROWS rows and walks the other sequence in tiles of BK rows
// staged in shared memory. D (a power of two >= dim) is a template parameter; columns
// beyond `dim` are zero in registers and tiles, so they add nothing.
#include "common.cuh"

namespace needle {

constexpr int ATT_TPR = 4;   // threads per row
constexpr int ATT_ROWS = 32; // rows per block (ATT_TPR * ATT_ROWS threads)
constexpr int ATT_CHUNK = 8; // keys whose scores the forward holds at once

// keys (or queries) per shared tile: two tiles of BK x D stay within 32 KB
template <class T, int D>
__host__ __device__ constexpr int att_tile() { return D * sizeof(T) > 512 ? 16 : 32; }

// the causal mask: key j is visible from query i when j <= i (seq_q == seq_k)
__device__ __forceinline__ bool att_visible(i64 i, i64 j, i64 seq_k, int causal) {
  return j < seq_k && (!causal || j <= i);
}

// `tile` (BK x D) <- rows [r0, r0 + BK) of the (rows, dim) matrix `src`, zero-padded
template <class T, int D, int BK>
__device__ __forceinline__ void att_stage(T* tile, const T* src, i64 r0, i64 rows, int dim) {
  for (int e = threadIdx.x; e < BK * D; e += blockDim.x) {
    const i64 r = r0 + e / D;
    const int c = e % D;
    tile[e] = (r < rows && c < dim) ? src[r * dim + c] : T(0);
  }
}

// this thread's columns of row `r` of `src` (zero beyond the matrix)
template <class T, int P>
__device__ __forceinline__ void att_load_row(T* reg, const T* src, i64 r, i64 rows, int dim,
                                             int lane, T scale = T(1)) {
#pragma unroll
  for (int u = 0; u < P; ++u) {
    const int c = u * ATT_TPR + lane;
    reg[u] = (r < rows && c < dim) ? src[r * dim + c] * scale : T(0);
  }
}

template <class T, int P>
__device__ __forceinline__ void att_store_row(T* dst, const T* reg, i64 r, i64 rows, int dim,
                                              int lane, T scale) {
  if (r >= rows) return;
#pragma unroll
  for (int u = 0; u < P; ++u) {
    const int c = u * ATT_TPR + lane;
    if (c < dim) dst[r * dim + c] = reg[u] * scale;
  }
}

// the full dot product of a row's registers with a tile row (every lane gets it)
template <class T, int P>
__device__ __forceinline__ T att_dot(const T* reg, const T* tile_row, int lane) {
  T s = T(0);
#pragma unroll
  for (int u = 0; u < P; ++u) s += reg[u] * tile_row[u * ATT_TPR + lane];
  return warp_reduce<Add>(s, ATT_TPR);
}

// out = softmax(scale * q k^T [+ causal mask]) v, with an online softmax over key tiles
template <class T, int D>
__device__ void attention_forward(const T* q, const T* k, const T* v, T* out, T* stats,
                                  i64 seq_q, i64 seq_k, int dim, T scale, int causal) {
  constexpr int P = D / ATT_TPR, BK = att_tile<T, D>();
  __shared__ T ks[BK * D], vs[BK * D];
  const i64 b = blockIdx.y, i = (i64)blockIdx.x * ATT_ROWS + threadIdx.x / ATT_TPR;
  const int lane = threadIdx.x % ATT_TPR;
  q += b * seq_q * dim, k += b * seq_k * dim, v += b * seq_k * dim, out += b * seq_q * dim;
  T qr[P], acc[P];
  att_load_row<T, P>(qr, q, i, seq_q, dim, lane, scale);  // the scale folded into q
#pragma unroll
  for (int u = 0; u < P; ++u) acc[u] = T(0);
  T m = neg_inf<T>(), l = T(0);
  // causal: no query of this block sees a key past its last row
  const i64 k_end = causal ? min(seq_k, (i64)(blockIdx.x + 1) * ATT_ROWS) : seq_k;
  for (i64 j0 = 0; j0 < k_end; j0 += BK) {
    __syncthreads();  // the previous tile has been read
    att_stage<T, D, BK>(ks, k, j0, seq_k, dim);
    att_stage<T, D, BK>(vs, v, j0, seq_k, dim);
    __syncthreads();
#pragma unroll 1
    for (int c0 = 0; c0 < BK; c0 += ATT_CHUNK) {  // (a chunk unrolled: scores in registers)
      T s[ATT_CHUNK], chunk_max = neg_inf<T>();
#pragma unroll
      for (int jj = 0; jj < ATT_CHUNK; ++jj) {
        const T dot = att_dot<T, P>(qr, ks + (c0 + jj) * D, lane);
        s[jj] = att_visible(i, j0 + c0 + jj, seq_k, causal) ? dot : neg_inf<T>();
        chunk_max = Maximum()(chunk_max, s[jj]);
      }
      const T m_new = Maximum()(m, chunk_max);
      if (m_new == neg_inf<T>()) continue;  // no visible key yet (a padding row)
      const T correction = n_exp(m - m_new);
      l *= correction;
#pragma unroll
      for (int u = 0; u < P; ++u) acc[u] *= correction;
#pragma unroll
      for (int jj = 0; jj < ATT_CHUNK; ++jj) {
        const T p = n_exp(s[jj] - m_new);
        l += p;
#pragma unroll
        for (int u = 0; u < P; ++u) acc[u] += p * vs[(c0 + jj) * D + u * ATT_TPR + lane];
      }
      m = m_new;
    }
  }
  att_store_row<T, P>(out, acc, i, seq_q, dim, lane, T(1) / l);
  if (i < seq_q && lane == 0) stats[b * seq_q + i] = m + n_log(l);
}

// dq = scale * sum_j dS_ij k_j, dS_ij = P_ij (dO_i . v_j - delta_i), delta_i = dO_i . O_i;
// also writes delta for the dk/dv kernel
template <class T, int D>
__device__ void attention_backward_dq(const T* q, const T* k, const T* v, const T* out,
                                      const T* stats, const T* grad, T* dq, T* delta,
                                      i64 seq_q, i64 seq_k, int dim, T scale, int causal) {
  constexpr int P = D / ATT_TPR, BK = att_tile<T, D>();
  __shared__ T ks[BK * D], vs[BK * D];
  const i64 b = blockIdx.y, i = (i64)blockIdx.x * ATT_ROWS + threadIdx.x / ATT_TPR;
  const int lane = threadIdx.x % ATT_TPR;
  const i64 qo = b * seq_q * dim, ko = b * seq_k * dim;
  T qr[P], gr[P], acc[P];
  att_load_row<T, P>(qr, q + qo, i, seq_q, dim, lane, scale);
  att_load_row<T, P>(gr, grad + qo, i, seq_q, dim, lane);
  att_load_row<T, P>(acc, out + qo, i, seq_q, dim, lane);  // O, for delta; then dq
  T d_i = T(0);
#pragma unroll
  for (int u = 0; u < P; ++u) d_i += gr[u] * acc[u], acc[u] = T(0);
  d_i = warp_reduce<Add>(d_i, ATT_TPR);
  const T lse = i < seq_q ? stats[b * seq_q + i] : T(0);
  if (i < seq_q && lane == 0) delta[b * seq_q + i] = d_i;
  const i64 k_end = causal ? min(seq_k, (i64)(blockIdx.x + 1) * ATT_ROWS) : seq_k;
  for (i64 j0 = 0; j0 < k_end; j0 += BK) {
    __syncthreads();
    att_stage<T, D, BK>(ks, k + ko, j0, seq_k, dim);
    att_stage<T, D, BK>(vs, v + ko, j0, seq_k, dim);
    __syncthreads();
#pragma unroll 2
    for (int jj = 0; jj < BK; ++jj) {
      const T s = att_dot<T, P>(qr, ks + jj * D, lane);
      const T dp = att_dot<T, P>(gr, vs + jj * D, lane);
      const T p = att_visible(i, j0 + jj, seq_k, causal) ? n_exp(s - lse) : T(0);
      const T ds = p * (dp - d_i);
#pragma unroll
      for (int u = 0; u < P; ++u) acc[u] += ds * ks[jj * D + u * ATT_TPR + lane];
    }
  }
  att_store_row<T, P>(dq + qo, acc, i, seq_q, dim, lane, scale);
}

// dv_j = sum_i P_ij dO_i and dk_j = scale * sum_i dS_ij q_i, one key row per TPR threads
template <class T, int D>
__device__ void attention_backward_dkv(const T* q, const T* k, const T* v, const T* stats,
                                       const T* grad, const T* delta, T* dk, T* dv,
                                       i64 seq_q, i64 seq_k, int dim, T scale, int causal) {
  constexpr int P = D / ATT_TPR, BQ = att_tile<T, D>();
  __shared__ T qs[BQ * D], gs[BQ * D], lses[BQ], deltas[BQ];
  const i64 b = blockIdx.y, j = (i64)blockIdx.x * ATT_ROWS + threadIdx.x / ATT_TPR;
  const int lane = threadIdx.x % ATT_TPR;
  const i64 qo = b * seq_q * dim, ko = b * seq_k * dim;
  T kr[P], vr[P], dka[P], dva[P];
  att_load_row<T, P>(kr, k + ko, j, seq_k, dim, lane, scale);
  att_load_row<T, P>(vr, v + ko, j, seq_k, dim, lane);
#pragma unroll
  for (int u = 0; u < P; ++u) dka[u] = dva[u] = T(0);
  // causal: queries before this block's first key see none of its keys
  const i64 i_start = causal ? (i64)blockIdx.x * ATT_ROWS : 0;
  for (i64 i0 = i_start; i0 < seq_q; i0 += BQ) {
    __syncthreads();
    att_stage<T, D, BQ>(qs, q + qo, i0, seq_q, dim);
    att_stage<T, D, BQ>(gs, grad + qo, i0, seq_q, dim);
    for (int e = threadIdx.x; e < BQ; e += blockDim.x) {
      const bool in = i0 + e < seq_q;
      lses[e] = in ? stats[b * seq_q + i0 + e] : T(0);
      deltas[e] = in ? delta[b * seq_q + i0 + e] : T(0);
    }
    __syncthreads();
#pragma unroll 2
    for (int ii = 0; ii < BQ; ++ii) {
      const i64 i = i0 + ii;
      const T s = att_dot<T, P>(kr, qs + ii * D, lane);
      const T dp = att_dot<T, P>(vr, gs + ii * D, lane);
      const T p = (i < seq_q && att_visible(i, j, seq_k, causal)) ? n_exp(s - lses[ii]) : T(0);
      const T ds = p * (dp - deltas[ii]);
#pragma unroll
      for (int u = 0; u < P; ++u) {
        dva[u] += p * gs[ii * D + u * ATT_TPR + lane];
        dka[u] += ds * qs[ii * D + u * ATT_TPR + lane];
      }
    }
  }
  att_store_row<T, P>(dk + ko, dka, j, seq_k, dim, lane, scale);
  att_store_row<T, P>(dv + ko, dva, j, seq_k, dim, lane, T(1));
}

}  // namespace needle

#define NEEDLE_ATTENTION(T, sfx, D)                                                          \
  extern "C" __global__ void __launch_bounds__(needle::ATT_TPR * needle::ATT_ROWS)             \
  needle_attention_##sfx##_d##D(const T* q, const T* k, const T* v, T* out, T* stats,          \
                                needle::i64 seq_q, needle::i64 seq_k, int dim, T scale,       \
                                int causal) {                                                 \
    needle::attention_forward<T, D>(q, k, v, out, stats, seq_q, seq_k, dim, scale, causal);   \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(needle::ATT_TPR * needle::ATT_ROWS)             \
  needle_attention_bwd_dq_##sfx##_d##D(const T* q, const T* k, const T* v, const T* out,       \
                                       const T* stats, const T* grad, T* dq, T* delta,         \
                                       needle::i64 seq_q, needle::i64 seq_k, int dim,          \
                                       T scale, int causal) {                                  \
    needle::attention_backward_dq<T, D>(q, k, v, out, stats, grad, dq, delta, seq_q, seq_k,    \
                                        dim, scale, causal);                                   \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(needle::ATT_TPR * needle::ATT_ROWS)             \
  needle_attention_bwd_dkv_##sfx##_d##D(const T* q, const T* k, const T* v, const T* stats,    \
                                        const T* grad, const T* delta, T* dk, T* dv,           \
                                        needle::i64 seq_q, needle::i64 seq_k, int dim,         \
                                        T scale, int causal) {                                 \
    needle::attention_backward_dkv<T, D>(q, k, v, stats, grad, delta, dk, dv, seq_q, seq_k,    \
                                         dim, scale, causal);                                  \
  }

#define NEEDLE_ATTENTION_DIMS(T, sfx) \
  NEEDLE_ATTENTION(T, sfx, 16)        \
  NEEDLE_ATTENTION(T, sfx, 32)        \
  NEEDLE_ATTENTION(T, sfx, 64)        \
  NEEDLE_ATTENTION(T, sfx, 128)

NEEDLE_ATTENTION_DIMS(float, f32)
NEEDLE_ATTENTION_DIMS(double, f64)
