// Matrix products: C[b] (m x n) = A[b] (m x k) @ B[b] (k x n), all row-major.
//
// Three kernels share one launch interface:
//   sgemm     fp32 on CUDA cores (exact FFMA): shared-memory tiles, 8x8 outputs per thread
//   dgemm     fp64, a plain tiled kernel (4x4 outputs per thread)
//   tf32gemm  fp32 inputs rounded to TF32 on tensor cores (mma.sync m16n8k8), opt-in only
// blockIdx.x enumerates output tiles (grouped for L2 reuse), blockIdx.z = split * batch + b.
// Split-K: split s covers k in [s * kchunk, min(k, (s + 1) * kchunk)) and writes its
// partial product to C + z * m * n; the host then sums the splits with splitk_sum. With
// one split that is just C[b]. Sizes need not be multiples of the tile: loads outside the
// matrix read zeros and stores are masked. The _vec variants use 16-byte loads/stores and
// need k % 4 == n % 4 == 0 and 16-byte aligned pointers (checked on the host).
#include "common.cuh"

namespace needle {

// Linear block id -> (tile_m, tile_n), walking GROUP_M tile rows at a time so blocks that
// run together share rows of A and columns of B in L2.
__device__ __forceinline__ void tile_coords(int tiles_m, int tiles_n, int& tm, int& tn) {
  constexpr int GROUP_M = 8;
  const int bid = blockIdx.x;
  const int per_group = GROUP_M * tiles_n;
  const int first_m = (bid / per_group) * GROUP_M;
  const int group_m = min(tiles_m - first_m, GROUP_M);
  tm = first_m + (bid % per_group) % group_m;
  tn = (bid % per_group) / group_m;
}

// Where block (tile, z) reads and writes; returns its k range.
template <class T>
__device__ __forceinline__ void gemm_offsets(const T*& A, const T*& B, T*& C, int batch, int m,
                                             int n, int k, int kchunk, int& kbeg, int& kend) {
  const int z = blockIdx.z, b = z % batch, split = z / batch;
  A += (i64)b * m * k;
  B += (i64)b * k * n;
  C += (i64)z * m * n;
  kbeg = split * kchunk;
  kend = min(k, kbeg + kchunk);
}

__device__ __forceinline__ float4 zero4() { return make_float4(0.f, 0.f, 0.f, 0.f); }

// A's rows [m0, m0 + BM) x k-columns [k0, k0 + BK) as float4 groups along k.
// Group f covers row f / (BK / 4), columns (f % (BK / 4)) * 4 .. + 3.
template <int BK, bool VEC>
__device__ __forceinline__ float4 load_a4(const float* A, int m, int k, int kend, int row,
                                          int col) {
  if (row >= m) return zero4();
  const float* p = A + (i64)row * k + col;
  if (VEC) return col < kend ? *reinterpret_cast<const float4*>(p) : zero4();
  return make_float4(col < kend ? p[0] : 0.f, col + 1 < kend ? p[1] : 0.f,
                     col + 2 < kend ? p[2] : 0.f, col + 3 < kend ? p[3] : 0.f);
}

// B's row `row` (a k index), columns col .. col + 3
template <bool VEC>
__device__ __forceinline__ float4 load_b4(const float* B, int n, int kend, int row, int col) {
  if (row >= kend) return zero4();
  const float* p = B + (i64)row * n + col;
  if (VEC) return col < n ? *reinterpret_cast<const float4*>(p) : zero4();
  return make_float4(col < n ? p[0] : 0.f, col + 1 < n ? p[1] : 0.f, col + 2 < n ? p[2] : 0.f,
                     col + 3 < n ? p[3] : 0.f);
}

// Store 4 consecutive outputs of one row, masked at the right edge.
template <bool VEC>
__device__ __forceinline__ void store4(float* C, int n, int row, int col, float4 v) {
  float* p = C + (i64)row * n + col;
  if (VEC) {
    if (col < n) *reinterpret_cast<float4*>(p) = v;
  } else {
    if (col < n) p[0] = v.x;
    if (col + 1 < n) p[1] = v.y;
    if (col + 2 < n) p[2] = v.z;
    if (col + 3 < n) p[3] = v.w;
  }
}

// ---- SGEMM: BM x BN block tile, BK deep, 8x8 outputs per thread -------------------------
// Each thread owns rows {tr*4 + i, BM/2 + tr*4 + i} and columns {tc*4 + j, BN/2 + tc*4 + j}
// (i, j < 4): four 4x4 quadrants, so every shared-memory read is one 16-byte LDS.128. A
// warp is 4 x 8 threads, so a warp's LDS.128 touches 4 (A) or 8 (B) distinct float4s:
// broadcast, no bank conflicts. A is stored transposed (As[k][m]) so its reads are
// contiguous along m; the 4-float row padding keeps the transposing stores conflict-free
// and 16-byte aligned. Two shared-memory stages: the next k-tile is fetched into registers
// while the current one is multiplied, then stored into the other stage; one barrier
// per k-tile.
template <int BM, int BN, int BK, bool VEC>
__device__ __forceinline__ void sgemm(const float* A, const float* B, float* C, int batch,
                                      int m, int n, int k, int kchunk) {
  constexpr int THREADS = BM * BN / 64;
  constexpr int WARPS_N = BN / 64;  // warps along n; a warp covers 4 x 8 thread groups
  constexpr int PAD = 4;
  constexpr int A_LOADS = BM * BK / 4 / THREADS, B_LOADS = BK * BN / 4 / THREADS;
  static_assert(BN % 64 == 0 && BM % 32 == 0 && BK % 4 == 0, "unsupported tile");
  static_assert(A_LOADS * THREADS * 4 == BM * BK && B_LOADS * THREADS * 4 == BK * BN,
                "tile loads must divide evenly among threads");
  __shared__ __align__(16) float As[2][BK][BM + PAD];
  __shared__ __align__(16) float Bs[2][BK][BN];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int tr = (warp / WARPS_N) * 4 + lane / 8;
  const int tc = (warp % WARPS_N) * 8 + lane % 8;
  int tm, tn, kbeg, kend;
  tile_coords((m + BM - 1) / BM, (n + BN - 1) / BN, tm, tn);
  gemm_offsets(A, B, C, batch, m, n, k, kchunk, kbeg, kend);
  const int m0 = tm * BM, n0 = tn * BN;

  float4 ra[A_LOADS], rb[B_LOADS];
  auto fetch = [&](int k0) {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int f = tid + l * THREADS;
      ra[l] = load_a4<BK, VEC>(A, m, k, kend, m0 + f / (BK / 4), k0 + (f % (BK / 4)) * 4);
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int f = tid + l * THREADS;
      rb[l] = load_b4<VEC>(B, n, kend, k0 + f / (BN / 4), n0 + (f % (BN / 4)) * 4);
    }
  };
  auto stash = [&](int s) {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int f = tid + l * THREADS, row = f / (BK / 4), kq = (f % (BK / 4)) * 4;
      As[s][kq + 0][row] = ra[l].x;
      As[s][kq + 1][row] = ra[l].y;
      As[s][kq + 2][row] = ra[l].z;
      As[s][kq + 3][row] = ra[l].w;
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int f = tid + l * THREADS;
      *reinterpret_cast<float4*>(&Bs[s][f / (BN / 4)][(f % (BN / 4)) * 4]) = rb[l];
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
  if (ktiles > 0) {
    fetch(kbeg);
    stash(0);
  }
  __syncthreads();
  for (int t = 0; t < ktiles; ++t) {
    const int cur = t & 1;
    if (t + 1 < ktiles) fetch(kbeg + (t + 1) * BK);  // in flight during the FFMAs below
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][tr * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][kk][BM / 2 + tr * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tc * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][kk][BN / 2 + tc * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (t + 1 < ktiles) stash(cur ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int row = m0 + (i < 4 ? tr * 4 + i : BM / 2 + tr * 4 + i - 4);
    if (row < m) {
      store4<VEC>(C, n, row, n0 + tc * 4,
                  make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
      store4<VEC>(C, n, row, n0 + BN / 2 + tc * 4,
                  make_float4(acc[i][4], acc[i][5], acc[i][6], acc[i][7]));
    }
  }
}

// ---- DGEMM: 64 x 64 tile, BK = 8, 256 threads, 4 x 4 outputs each (strided by 16) ----------
__device__ __forceinline__ void dgemm(const double* A, const double* B, double* C, int batch,
                                      int m, int n, int k, int kchunk) {
  constexpr int BM = 64, BN = 64, BK = 8;
  __shared__ double As[BK][BM + 1];
  __shared__ double Bs[BK][BN];
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  int tm, tn, kbeg, kend;
  tile_coords((m + BM - 1) / BM, (n + BN - 1) / BN, tm, tn);
  gemm_offsets(A, B, C, batch, m, n, k, kchunk, kbeg, kend);
  const int m0 = tm * BM, n0 = tn * BN;

  double acc[4][4] = {};
  for (int k0 = kbeg; k0 < kend; k0 += BK) {
#pragma unroll
    for (int l = 0; l < 2; ++l) {
      const int f = tid + l * 256;
      const int ar = f / BK, ak = f % BK;  // A: row-major walk, k fastest (coalesced)
      As[ak][ar] = (m0 + ar < m && k0 + ak < kend) ? A[(i64)(m0 + ar) * k + k0 + ak] : 0.0;
      const int bk = f / BN, bc = f % BN;
      Bs[bk][bc] = (k0 + bk < kend && n0 + bc < n) ? B[(i64)(k0 + bk) * n + n0 + bc] : 0.0;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      double a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { a[i] = As[kk][tr + 16 * i]; b[i] = Bs[kk][tc + 16 * i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int row = m0 + tr + 16 * i, col = n0 + tc + 16 * j;
      if (row < m && col < n) C[(i64)row * n + col] = acc[i][j];
    }
}

// ---- TF32 tensor cores: 128 x 128 x 16 tile, 8 warps of 64 x 32, mma.sync.m16n8k8 ----------
// Fragment layouts (PTX ISA, mma.m16n8k8 .tf32), g = lane / 4, t = lane % 4:
//   A (16x8, row): a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
//   B (8x8, col):  b0 (t, g)  b1 (t+4, g)
//   C (16x8):      c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1)
// As is [m][k] with row pitch 20 and Bs [k][n] with pitch 136: both make the fragment
// reads of a warp hit 32 different banks.
// TF32 needs sm_80; on older GPUs the kernel compiles to nothing and the host never picks it.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define NEEDLE_HAS_TF32 1
#endif

__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r = __float_as_uint(x);
#ifdef NEEDLE_HAS_TF32
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
#endif
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4],
                                         const unsigned (&b)[2]) {
#ifdef NEEDLE_HAS_TF32
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

template <bool VEC>
__device__ __forceinline__ void tf32gemm(const float* A, const float* B, float* C, int batch,
                                         int m, int n, int k, int kchunk) {
  constexpr int BM = 128, BN = 128, BK = 16, THREADS = 256, LDK = BK + 4, LDN = BN + 8;
  constexpr int A_LOADS = BM * BK / 4 / THREADS, B_LOADS = BK * BN / 4 / THREADS;
  __shared__ __align__(16) float As[2][BM][LDK];
  __shared__ __align__(16) float Bs[2][BK][LDN];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 4, wn = warp % 4, g = lane / 4, t = lane % 4;
  int tm, tn, kbeg, kend;
  tile_coords((m + BM - 1) / BM, (n + BN - 1) / BN, tm, tn);
  gemm_offsets(A, B, C, batch, m, n, k, kchunk, kbeg, kend);
  const int m0 = tm * BM, n0 = tn * BN;

  float4 ra[A_LOADS], rb[B_LOADS];
  auto fetch = [&](int k0) {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int f = tid + l * THREADS;
      ra[l] = load_a4<BK, VEC>(A, m, k, kend, m0 + f / (BK / 4), k0 + (f % (BK / 4)) * 4);
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int f = tid + l * THREADS;
      rb[l] = load_b4<VEC>(B, n, kend, k0 + f / (BN / 4), n0 + (f % (BN / 4)) * 4);
    }
  };
  auto stash = [&](int s) {
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
      const int f = tid + l * THREADS;
      *reinterpret_cast<float4*>(&As[s][f / (BK / 4)][(f % (BK / 4)) * 4]) = ra[l];
    }
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l) {
      const int f = tid + l * THREADS;
      *reinterpret_cast<float4*>(&Bs[s][f / (BN / 4)][(f % (BN / 4)) * 4]) = rb[l];
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
  if (ktiles > 0) {
    fetch(kbeg);
    stash(0);
  }
  __syncthreads();
  for (int kt = 0; kt < ktiles; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < ktiles) fetch(kbeg + (kt + 1) * BK);
#pragma unroll
    for (int ks = 0; ks < BK; ks += 8) {
      unsigned af[4][4], bf[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int r = wm * 64 + mi * 16 + g;
        af[mi][0] = to_tf32(As[cur][r][ks + t]);
        af[mi][1] = to_tf32(As[cur][r + 8][ks + t]);
        af[mi][2] = to_tf32(As[cur][r][ks + t + 4]);
        af[mi][3] = to_tf32(As[cur][r + 8][ks + t + 4]);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int c = wn * 32 + ni * 8 + g;
        bf[ni][0] = to_tf32(Bs[cur][ks + t][c]);
        bf[ni][1] = to_tf32(Bs[cur][ks + t + 4][c]);
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_tf32(acc[mi][ni], af[mi], bf[ni]);
    }
    if (kt + 1 < ktiles) stash(cur ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int row = m0 + wm * 64 + mi * 16 + g + (q >> 1) * 8;
        const int col = n0 + wn * 32 + ni * 8 + 2 * t + (q & 1);
        if (row < m && col < n) C[(i64)row * n + col] = acc[mi][ni][q];
      }
}

// out[i] = sum over splits of parts[s * count + i]
template <class T>
__device__ void splitk_sum(const T* parts, T* out, i64 count, int splits) {
  for (i64 i = global_thread(); i < count; i += grid_threads()) {
    T s = parts[i];
    for (int p = 1; p < splits; ++p) s += parts[(i64)p * count + i];
    out[i] = s;
  }
}

}  // namespace needle

#define NEEDLE_GEMM_PARAMS(T) \
  const T *A, const T *B, T *C, int batch, int m, int n, int k, int kchunk
// MB: minimum resident blocks per SM asked of the compiler (caps registers per thread:
// 2 x 256 threads -> 128 registers, 1 -> up to 255, trading occupancy for no spills).
#define NEEDLE_SGEMM(BM, BN, BK, MB)                                                          \
  extern "C" __global__ void __launch_bounds__(BM * BN / 64, MB)                               \
      needle_sgemm_##BM##x##BN##x##BK##m##MB##_vec(NEEDLE_GEMM_PARAMS(float)) {                \
    needle::sgemm<BM, BN, BK, true>(A, B, C, batch, m, n, k, kchunk);                          \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(BM * BN / 64, MB)                               \
      needle_sgemm_##BM##x##BN##x##BK##m##MB##_any(NEEDLE_GEMM_PARAMS(float)) {                \
    needle::sgemm<BM, BN, BK, false>(A, B, C, batch, m, n, k, kchunk);                         \
  }

// every (BM, BN, BK, MB) of kernels.SGEMM_TILES
NEEDLE_SGEMM(128, 128, 8, 2)
NEEDLE_SGEMM(128, 128, 16, 2)
NEEDLE_SGEMM(128, 128, 8, 1)
NEEDLE_SGEMM(128, 128, 16, 1)
NEEDLE_SGEMM(64, 128, 8, 4)
NEEDLE_SGEMM(64, 128, 8, 2)
NEEDLE_SGEMM(64, 64, 8, 8)

extern "C" __global__ void __launch_bounds__(256) needle_dgemm_64x64x8_any(NEEDLE_GEMM_PARAMS(double)) {
  needle::dgemm(A, B, C, batch, m, n, k, kchunk);
}
extern "C" __global__ void __launch_bounds__(256, 2) needle_tf32gemm_128x128x16_vec(NEEDLE_GEMM_PARAMS(float)) {
  needle::tf32gemm<true>(A, B, C, batch, m, n, k, kchunk);
}
extern "C" __global__ void __launch_bounds__(256, 2) needle_tf32gemm_128x128x16_any(NEEDLE_GEMM_PARAMS(float)) {
  needle::tf32gemm<false>(A, B, C, batch, m, n, k, kchunk);
}
extern "C" __global__ void needle_splitk_sum_f32(const float* parts, float* out, needle::i64 count, int splits) {
  needle::splitk_sum(parts, out, count, splits);
}
extern "C" __global__ void needle_splitk_sum_f64(const double* parts, double* out, needle::i64 count, int splits) {
  needle::splitk_sum(parts, out, count, splits);
}
