// The padded convolution's data movement around our GEMM (the backend's conv and
// conv_backward): im2col gathers the patches of NCHW or NHWC input, zero outside the image,
// and col2im sums patch gradients back onto the input. A patch row (one output pixel)
// lists its taps as (ki, kj, c), the order of the (k, k, c_in, c_out) weight flattened.
#include "common.cuh"

namespace needle {

struct ConvShape {
  i64 n, c, h, w, ho, wo;
  int k, stride, pad, channels_first;

  __device__ i64 at(i64 b, i64 ci, i64 ih, i64 iw) const {  // x's element, either layout
    return channels_first ? ((b * c + ci) * h + ih) * w + iw : ((b * h + ih) * w + iw) * c + ci;
  }
};

// cols[r, q] (or cols[q, r] when `transposed`) for patch row r = (b, oh, ow) and tap
// q = (ki, kj, ci), over the images [0, s.n) of x
template <class T>
__device__ void im2col(const T* x, T* cols, ConvShape s, int transposed) {
  const i64 taps = (i64)s.k * s.k * s.c, rows = s.n * s.ho * s.wo;
  for (i64 e = global_thread(); e < rows * taps; e += grid_threads()) {
    const i64 r = transposed ? e % rows : e / taps, q = transposed ? e / rows : e % taps;
    const i64 ow = r % s.wo, oh = (r / s.wo) % s.ho, b = r / (s.wo * s.ho);
    const i64 ci = q % s.c, kj = (q / s.c) % s.k, ki = q / ((i64)s.c * s.k);
    const i64 ih = oh * s.stride - s.pad + ki, iw = ow * s.stride - s.pad + kj;
    const bool inside = ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
    cols[e] = inside ? x[s.at(b, ci, ih, iw)] : T(0);
  }
}

// dx[b, ci, ih, iw] = sum of dcols[(b, oh, ow), (ki, kj, ci)] over the taps that read it:
// one thread per input element, in a fixed order (deterministic, no atomics)
template <class T>
__device__ void col2im(const T* dcols, T* dx, ConvShape s) {
  const i64 taps = (i64)s.k * s.k * s.c, size = s.n * s.c * s.h * s.w;
  for (i64 e = global_thread(); e < size; e += grid_threads()) {
    i64 b, ci, ih, iw;
    if (s.channels_first) {
      iw = e % s.w, ih = (e / s.w) % s.h, ci = (e / (s.w * s.h)) % s.c, b = e / (s.w * s.h * s.c);
    } else {
      ci = e % s.c, iw = (e / s.c) % s.w, ih = (e / (s.c * s.w)) % s.h, b = e / (s.c * s.w * s.h);
    }
    T sum = T(0);
    for (int ki = 0; ki < s.k; ++ki) {
      const i64 y = ih + s.pad - ki;  // = oh * stride for the output rows reading row ih
      if (y < 0 || y % s.stride) continue;
      const i64 oh = y / s.stride;
      if (oh >= s.ho) continue;
      for (int kj = 0; kj < s.k; ++kj) {
        const i64 x = iw + s.pad - kj;
        if (x < 0 || x % s.stride) continue;
        const i64 ow = x / s.stride;
        if (ow >= s.wo) continue;
        sum += dcols[((b * s.ho + oh) * s.wo + ow) * taps + ((i64)ki * s.k + kj) * s.c + ci];
      }
    }
    dx[e] = sum;
  }
}

}  // namespace needle

#define NEEDLE_CONV(T, sfx)                                                                   \
  extern "C" __global__ void needle_im2col_##sfx(                                             \
      const T* x, T* cols, needle::i64 n, needle::i64 c, needle::i64 h, needle::i64 w,         \
      needle::i64 ho, needle::i64 wo, int k, int stride, int pad, int channels_first,          \
      int transposed) {                                                                       \
    needle::im2col(x, cols, needle::ConvShape{n, c, h, w, ho, wo, k, stride, pad,              \
                                              channels_first}, transposed);                    \
  }                                                                                           \
  extern "C" __global__ void needle_col2im_##sfx(                                             \
      const T* dcols, T* dx, needle::i64 n, needle::i64 c, needle::i64 h, needle::i64 w,       \
      needle::i64 ho, needle::i64 wo, int k, int stride, int pad, int channels_first) {        \
    needle::col2im(dcols, dx, needle::ConvShape{n, c, h, w, ho, wo, k, stride, pad,            \
                                                channels_first});                              \
  }

NEEDLE_CONV(float, f32)
NEEDLE_CONV(double, f64)
