// Conversions between float32 and bfloat16 (stored as uint16), for the cudnn device: cuDNN's
// fused attention reads and writes bf16 only. Round to nearest even, as __float2bfloat16_rn,
// written out with bit operations so NVRTC needs no cuda_bf16.h.
#include "common.cuh"

namespace needle {

__device__ inline unsigned short float_to_bf16(float x) {
  unsigned int bits = __float_as_uint(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays a (quiet) NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);                   // round half to even
  return (unsigned short)(bits >> 16);
}

}  // namespace needle

extern "C" __global__ void needle_cast_f32_bf16(const float* a, unsigned short* out,
                                                needle::i64 n) {
  for (needle::i64 i = needle::global_thread(); i < n; i += needle::grid_threads())
    out[i] = needle::float_to_bf16(a[i]);
}

extern "C" __global__ void needle_cast_bf16_f32(const unsigned short* a, float* out,
                                                needle::i64 n) {
  for (needle::i64 i = needle::global_thread(); i < n; i += needle::grid_threads())
    out[i] = __uint_as_float((unsigned int)a[i] << 16);
}
