// The LSTM cell, one launch per time step of a layer (the backend's lstm / lstm_backward
// loop over the steps, with the recurrent product between launches). One thread per
// (batch row, hidden unit); z, gates and dz hold a row's four gate blocks (i, f, g, o) of
// `hidden` each, as PyTorch orders them.
#include "common.cuh"

namespace needle {

// z = xp + hz; gates = (sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)); c = f * c_prev + i * g;
// h = o * tanh(c)
template <class T>
__device__ void lstm_cell(const T* xp, const T* hz, const T* c_prev, T* gates, T* c, T* h,
                          i64 batch, i64 hidden) {
  for (i64 e = global_thread(); e < batch * hidden; e += grid_threads()) {
    const i64 b = e / hidden, j = e % hidden, z = b * 4 * hidden + j;
    const T i = Sigmoid{}(xp[z] + hz[z]);
    const T f = Sigmoid{}(xp[z + hidden] + hz[z + hidden]);
    const T g = n_tanh(xp[z + 2 * hidden] + hz[z + 2 * hidden]);
    const T o = Sigmoid{}(xp[z + 3 * hidden] + hz[z + 3 * hidden]);
    const T cn = f * c_prev[e] + i * g;
    gates[z] = i, gates[z + hidden] = f, gates[z + 2 * hidden] = g, gates[z + 3 * hidden] = o;
    c[e] = cn;
    h[e] = o * n_tanh(cn);
  }
}

// One step back: dh = dhs + dh_carry, dc = dcs + dc_carry + dh * o * (1 - tanh(c)^2); writes
// the pre-activation gradients dz and the carried dc_carry = dc * f (in place: each thread
// reads and writes its own element). The host then forms dh_carry = dz @ W_hh^T.
template <class T>
__device__ void lstm_cell_backward(const T* gates, const T* c, const T* c_prev, const T* dhs,
                                   const T* dcs, const T* dh_carry, T* dc_carry, T* dz,
                                   i64 batch, i64 hidden) {
  for (i64 e = global_thread(); e < batch * hidden; e += grid_threads()) {
    const i64 b = e / hidden, j = e % hidden, z = b * 4 * hidden + j;
    const T i = gates[z], f = gates[z + hidden], g = gates[z + 2 * hidden],
            o = gates[z + 3 * hidden];
    const T dh = dhs[e] + dh_carry[e], tc = n_tanh(c[e]);
    const T dc = dcs[e] + dc_carry[e] + dh * o * (T(1) - tc * tc);
    dz[z] = dc * g * i * (T(1) - i);
    dz[z + hidden] = dc * c_prev[e] * f * (T(1) - f);
    dz[z + 2 * hidden] = dc * i * (T(1) - g * g);
    dz[z + 3 * hidden] = dh * tc * o * (T(1) - o);
    dc_carry[e] = dc * f;
  }
}

}  // namespace needle

#define NEEDLE_LSTM(T, sfx)                                                                 \
  extern "C" __global__ void needle_lstm_cell_##sfx(const T* xp, const T* hz, const T* c_prev, \
                                                    T* gates, T* c, T* h, needle::i64 batch,  \
                                                    needle::i64 hidden) {                    \
    needle::lstm_cell(xp, hz, c_prev, gates, c, h, batch, hidden);                            \
  }                                                                                           \
  extern "C" __global__ void needle_lstm_cell_backward_##sfx(                                 \
      const T* gates, const T* c, const T* c_prev, const T* dhs, const T* dcs,                \
      const T* dh_carry, T* dc_carry, T* dz, needle::i64 batch, needle::i64 hidden) {         \
    needle::lstm_cell_backward(gates, c, c_prev, dhs, dcs, dh_carry, dc_carry, dz, batch,     \
                               hidden);                                                       \
  }

NEEDLE_LSTM(float, f32)
NEEDLE_LSTM(double, f64)
