// Integer indexing with host indices (gathers and their gradients): take gathers
// out[i] = a[index[i]];
// scatter_add adds every a[i] into out[index[i]] deterministically, without atomics: the
// host sorts the index (contract.scatter_segments) and one thread per distinct target adds
// that target's sources, in their original order, into it.
// Indices are I = int when the buffer they index has < 2^31 elements, else 64-bit.
#include "common.cuh"

namespace needle {

template <class T, class I>
__device__ void take(const T* a, const I* index, T* out, i64 n) {
  for (i64 i = global_thread(); i < n; i += grid_threads()) out[i] = a[index[i]];
}

// out[targets[t]] += sum of a[order[j]] for j in [starts[t], starts[t + 1]), in order
template <class T, class I>
__device__ void scatter_add(const T* a, const I* starts, const I* targets, const I* order,
                            T* out, i64 n_targets) {
  for (i64 t = global_thread(); t < n_targets; t += grid_threads()) {
    T acc = T(0);
    for (I j = starts[t]; j < starts[t + 1]; ++j) acc += a[order[j]];
    out[targets[t]] += acc;
  }
}

// Embedding: out[i, j] = weight[ids[i], j], ids read on the device (stored as T); an id
// outside [0, rows) gives NaN. Its gradient adds grad[i, j] into dweight[ids[i], j] with
// atomics (repeated ids sum in no fixed order); dweight is zeroed first by the host.
template <class T>
__device__ void embedding(const T* weight, const T* ids, T* out, i64 n, i64 rows, i64 dim) {
  for (i64 e = global_thread(); e < n * dim; e += grid_threads()) {
    const T id = ids[e / dim];
    out[e] = id >= T(0) && id < T(rows) ? weight[(i64)id * dim + e % dim] : T(0) / T(0);
  }
}

template <class T>
__device__ void embedding_backward(const T* grad, const T* ids, T* dweight, i64 n, i64 rows,
                                   i64 dim) {
  for (i64 e = global_thread(); e < n * dim; e += grid_threads()) {
    const T id = ids[e / dim];
    if (id >= T(0) && id < T(rows)) atomicAdd(dweight + (i64)id * dim + e % dim, grad[e]);
  }
}

}  // namespace needle

#define NEEDLE_EMBEDDING(T, sfx)                                                            \
  extern "C" __global__ void needle_embedding_##sfx(const T* weight, const T* ids, T* out,  \
                                                    needle::i64 n, needle::i64 rows,       \
                                                    needle::i64 dim) {                     \
    needle::embedding(weight, ids, out, n, rows, dim);                                      \
  }                                                                                         \
  extern "C" __global__ void needle_embedding_backward_##sfx(                               \
      const T* grad, const T* ids, T* dweight, needle::i64 n, needle::i64 rows,             \
      needle::i64 dim) {                                                                    \
    needle::embedding_backward(grad, ids, dweight, n, rows, dim);                           \
  }

NEEDLE_EMBEDDING(float, f32)
NEEDLE_EMBEDDING(double, f64)

#define NEEDLE_GATHER(T, sfx, I, isfx)                                                      \
  extern "C" __global__ void needle_take_##sfx##_##isfx(const T* a, const I* index, T* out, \
                                                        needle::i64 n) {                   \
    needle::take(a, index, out, n);                                                         \
  }                                                                                         \
  extern "C" __global__ void needle_scatter_add_##sfx##_##isfx(                             \
      const T* a, const I* starts, const I* targets, const I* order, T* out,                \
      needle::i64 n_targets) {                                                              \
    needle::scatter_add(a, starts, targets, order, out, n_targets);                         \
  }

NEEDLE_GATHER(float, f32, int, i32)
NEEDLE_GATHER(float, f32, needle::i64, i64)
NEEDLE_GATHER(double, f64, int, i32)
NEEDLE_GATHER(double, f64, needle::i64, i64)
