"""Every CUDA entry point the backend launches, by source file: the one list that the
backend, the kernel sources and ``tools/check_cuda_kernels.py`` agree on.

The backend only launches names obtained through :func:`name`, which refuses a name not
listed here, and the CI check compiles each ``.cu`` file and fails if a listed entry point
is missing from the binary (or the binary has an unlisted ``needle_*`` kernel). So the
Python side and the kernel sources cannot drift apart.

Names follow ``needle_<op>_<f32|f64>[_variant]``.
"""
from ..contract import BINARY_OPS, REDUCE_OPS, UNARY_OPS

SUFFIX = {"float32": "f32", "float64": "f64"}
_SFX = tuple(SUFFIX.values())

#: threads per row of the row kernels (reduce also has 1 for very short rows)
REDUCE_TPR = (1, 32, 256)
ROW_TPR = (32, 256)
#: SGEMM configurations (BM, BN, BK, min blocks per SM) compiled into matmul.cu
SGEMM_TILES = ((128, 128, 8, 2), (128, 128, 16, 2), (128, 128, 8, 1), (128, 128, 16, 1),
               (64, 128, 8, 4), (64, 128, 8, 2), (64, 64, 8, 8))
#: head dims the attention kernels are compiled for (a dim runs in the next one up)
ATTENTION_DIMS = (16, 32, 64, 128)
ROW_OPS = ("logsumexp", "softmax", "cross_entropy", "layernorm", "layernorm_bwd_dx")


def tile_name(tile):
    """``(128, 128, 8, 2)`` -> ``"128x128x8m2"``, as in the SGEMM entry point names."""
    bm, bn, bk, mb = tile
    return f"{bm}x{bn}x{bk}m{mb}"


def _elementwise():
    names = [f"needle_unary_{op}_{s}" for op in UNARY_OPS for s in _SFX]
    names += [f"needle_{kind}_{op}_{s}" for kind in ("binary", "scalar") for op in BINARY_OPS
              for s in _SFX]
    return names + [f"needle_{op}_{s}" for op in ("select", "fill") for s in _SFX]


def _movement():
    return [f"needle_{kind}_{s}_{i}" for kind in ("compact", "ewise_setitem", "scalar_setitem")
            for s in _SFX for i in ("i32", "i64")] + ["needle_copy_ranges4"]


def _reduce():
    return [f"needle_reduce_{op}_{s}_t{t}" for op in REDUCE_OPS for s in _SFX for t in REDUCE_TPR]


def _matmul():
    names = [f"needle_sgemm_{tile_name(t)}_{v}" for t in SGEMM_TILES for v in ("vec", "any")]
    names += ["needle_dgemm_64x64x8_any", "needle_tf32gemm_128x128x16_vec",
              "needle_tf32gemm_128x128x16_any"]
    return names + [f"needle_splitk_sum_{s}" for s in _SFX]


def _fused():
    names = [f"needle_{op}_{s}_t{t}" for op in ROW_OPS for s in _SFX for t in ROW_TPR]
    names += [f"needle_{op}_{s}" for op in ("layernorm_bwd_params", "colsum", "bias_act_identity",
                                            "bias_act_relu", "batchnorm_identity",
                                            "batchnorm_relu", "running_stats", "sgd", "adam",
                                            "batchnorm_train_identity", "batchnorm_train_relu",
                                            "batchnorm_train_bwd_identity",
                                            "batchnorm_train_bwd_relu", "sgd_many",
                                            "adam_many")
              for s in _SFX]
    return names


def _gather():
    return [f"needle_{op}_{s}_{i}" for op in ("take", "scatter_add") for s in _SFX
            for i in ("i32", "i64")] + \
        [f"needle_{op}_{s}" for op in ("embedding", "embedding_backward") for s in _SFX]


#: source file (in kernels/) -> its extern "C" entry points
ENTRY_POINTS = {
    "elementwise.cu": _elementwise(),
    "movement.cu": _movement(),
    "reduce.cu": _reduce(),
    "matmul.cu": _matmul(),
    "fused.cu": _fused(),
    "gather.cu": _gather(),
    "recurrent.cu": [f"needle_{op}_{s}" for op in ("lstm_cell", "lstm_cell_backward")
                     for s in _SFX],
    "conv.cu": [f"needle_{op}_{s}" for op in ("im2col", "col2im") for s in _SFX],
    "attention.cu": [f"needle_attention{part}_{s}_d{d}" for part in ("", "_bwd_dq", "_bwd_dkv")
                     for s in _SFX for d in ATTENTION_DIMS],
    "convert.cu": ["needle_cast_f32_bf16", "needle_cast_bf16_f32"],  # used by the cudnn device
}

_FILE_OF = {n: f for f, names in ENTRY_POINTS.items() for n in names}


def name(*parts):
    """The entry point ``needle_<parts joined by _>`` and its source file.

    Raises ``KeyError`` for a name no source declares, so a typo fails at once.

    Example:
        >>> name("unary", "exp", "f32")
        ('elementwise.cu', 'needle_unary_exp_f32')
    """
    full = "needle_" + "_".join(str(p) for p in parts)
    if full not in _FILE_OF:
        raise KeyError(f"{full} is not a CUDA entry point listed in kernels.py")
    return _FILE_OF[full], full
