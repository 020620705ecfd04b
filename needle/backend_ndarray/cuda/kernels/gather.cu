// Integer indexing (Embedding and its gradient): take gathers out[i] = a[index[i]];
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

}  // namespace needle

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
