"""Choosing a GEMM kernel and its launch: pure Python, testable without a GPU.

Products with enough 128x128 tiles to give every SM one use the big SGEMM tile; smaller
products (and m <= 64) use 64x128 tiles, which waste fewer rows and make more blocks.
When the tiles alone still cannot fill the GPU (m or n small, k long), the k dimension is
split (split-K): each split writes a partial product and one more kernel sums them,
deterministically.

Defaults measured on an H100 (2026-11-23): 128x128x16 with
one block per SM (157 registers, no spills) ran 2048^3 / 4096^3 at 0.78x cuBLAS, against
0.73x for 128x128x8 with two blocks per SM (capped at 128 registers, spills); the
spill-free 64x128x8 (two blocks per SM) won on 1024^3, 256x1024x4096 and m = 64.
"""
import functools
import math
from dataclasses import dataclass

from .kernels import SGEMM_TILES, tile_name

#: (BM, BN, BK, min blocks per SM) for large fp32 products, and for small ones / m <= 64
DEFAULT_SGEMM_TILE = (128, 128, 16, 1)
DEFAULT_SGEMM_SMALL_TILE = (64, 128, 8, 2)
PRECISIONS = ("highest", "tf32")


@dataclass(frozen=True)
class GemmPlan:
    kernel: tuple  # name parts for kernels.name(...)
    threads: int  # block size
    tiles: int  # grid.x: output tiles of one product
    splits: int  # split-K factor (1: no split)
    kchunk: int  # k elements per split


@functools.lru_cache(maxsize=4096)  # pure, and called on every matmul: skip the arithmetic
def plan_gemm(batch, m, k, n, dtype, precision, sm_count, vec, sgemm_tile=DEFAULT_SGEMM_TILE,
              small_tile=DEFAULT_SGEMM_SMALL_TILE):
    """The kernel and launch shape for ``batch`` products (m, k) @ (k, n).

    Args:
        dtype: "float32" or "float64".
        precision: "highest" (exact fp32 FFMA) or "tf32" (tensor cores, fp32 only).
        sm_count: multiprocessors of the GPU (to decide on split-K).
        vec: whether the 16-byte-load variant is allowed (k % 4 == n % 4 == 0, aligned).
        sgemm_tile, small_tile: SGEMM configurations (kernels.SGEMM_TILES) for large fp32
            products (m > 64 and at least ``sm_count`` tiles of sgemm_tile) and the rest.
    """
    variant = "vec" if vec else "any"
    if dtype == "float64":
        (bm, bn, bk), kernel, threads = (64, 64, 8), ("dgemm", "64x64x8", "any"), 256
    elif precision == "tf32":
        (bm, bn, bk), kernel, threads = (128, 128, 16), ("tf32gemm", "128x128x16", variant), 256
    else:
        big_tiles = math.ceil(m / sgemm_tile[0]) * math.ceil(n / sgemm_tile[1]) * batch
        tile = tuple(sgemm_tile if m > 64 and big_tiles >= sm_count else small_tile)
        if tile not in SGEMM_TILES:
            raise ValueError(f"no SGEMM kernel for {tile}; have {SGEMM_TILES}")
        bm, bn, bk, _ = tile
        kernel, threads = ("sgemm", tile_name(tile), variant), bm * bn // 64
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    splits = 1
    if tiles * batch < sm_count and k >= 256:
        # aim at two blocks per SM, keep >= 128 of k per split, at most 32 splits
        splits = max(1, min(math.ceil(2 * sm_count / (tiles * batch)), k // 128, 32))
    kchunk = math.ceil(math.ceil(k / splits) / bk) * bk
    splits = math.ceil(k / kchunk)
    return GemmPlan(kernel, threads, tiles, splits, kchunk)
