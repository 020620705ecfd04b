"""Choosing how matmul.wgsl runs a product: block tile, memory interface, split-K.

The kernel computes 8 x 8 outputs per thread; the block tile sets the workgroup size
((BM / 8) * (BN / 8) threads). The rules below come from sweeping every tile and split on
an H100 through Vulkan (2026-11-23): 128 x 128 x 16 tiles for products
with at least 128 rows and columns, 64-row tiles otherwise, and K split across
workgroups until about two workgroups per multiprocessor of a large GPU are busy.
"""
from dataclasses import dataclass

# (BM, BN, BK): BM and BN must each be 8 * BK or 16 * BK (see matmul.wgsl)
LARGE = (128, 128, 16)
TILES = (LARGE, (128, 128, 8), (64, 128, 8), (64, 64, 8))
BUSY_GROUPS = 128       # large tiles: split K until this many workgroups run
BUSY_GROUPS_SMALL = 256  # 64-row tiles (half the threads each)
MIN_K_PER_SPLIT = 64
MAX_SPLITS = 16
MIN_SPLIT_MACS = 1 << 24  # smaller products are not worth a second dispatch
VECTOR_IO = ("vec4", "conv4")  # interfaces with vec4 loads, bounds checks only if needed


@dataclass(frozen=True)
class GemmPlan:
    bm: int
    bn: int
    bk: int
    io: str          # "vec4", "scalar", "conv" or "conv4": which matmul_io_*.wgsl
    checked: bool    # vec4 and conv4: bounds checks needed (some tile is partial)
    splits: int = 1
    k_split: int = 0

    @property
    def tile(self):
        return self.bm, self.bn, self.bk

    def consts(self):
        c = {"BM": self.bm, "BN": self.bn, "BK": self.bk}
        if self.io in VECTOR_IO:
            c["CHECKED"] = self.checked
        return c

    def groups(self, m, n):
        return -(-n // self.bn), -(-m // self.bm)


def shared_bytes(tile):
    """Workgroup memory a tile needs: two buffers of an A and a B tile."""
    bm, bn, bk = tile
    return 2 * bk * (bm + bn) * 4


def plan(batch, m, k, n, io=None, tile=None, splits=None, max_shared=32768):
    """The plan for ``batch`` products ``(m, k) @ (k, n)``; ``io`` is given ("conv" or
    "conv4") for convolutions; ``tile`` and ``splits`` override the choice (benchmarks);
    ``max_shared`` is the adapter's workgroup memory in bytes."""
    if io is None:
        io = "vec4" if k % 4 == 0 and n % 4 == 0 else "scalar"
    if tile is None:
        if m >= 128 and n >= 128:
            tile = LARGE if shared_bytes(LARGE) <= max_shared else (128, 128, 8)
        else:
            tile = (64, 128, 8) if n >= 128 else (64, 64, 8)
    bm, bn, bk = tile
    if splits is None:
        tiles = batch * -(-m // bm) * -(-n // bn)
        busy = BUSY_GROUPS if bm == 128 else BUSY_GROUPS_SMALL
        splits = 1
        if batch * m * n * k >= MIN_SPLIT_MACS:
            splits = max(1, min(-(-busy // tiles), k // MIN_K_PER_SPLIT, MAX_SPLITS))
    k_split = -(-k // splits)
    k_split = -(-k_split // bk) * bk
    splits = -(-k // k_split)  # every split gets some of K
    # every split but the last spans whole k_split steps, and the last one whole BK steps
    # when BK divides K: then only partial M or N tiles need checks
    checked = io not in VECTOR_IO or m % bm or n % bn or k % bk
    return GemmPlan(bm, bn, bk, io, bool(checked), splits, k_split)
