"""Tiny random HF checkpoints of every supported family, built offline with transformers (test helper)."""

from __future__ import annotations

import os

import numpy as np

# family name -> (transformers config class, model class, extra config kwargs)
CASES = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        tie_word_embeddings=True)),
    "llama_linear": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_theta=1000000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=6)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        query_pre_attn_scalar=24, sliding_window=6, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
        tie_word_embeddings=True)),
}


def hf_family_model(tmp: str, case: str, *, vocab: int = 256, hidden: int = 64, layers: int = 2, bos: int = 2,
                    eos: int = 3, pad: int = 0, seed: int = 0):
    """A random float32 HF model of `case` saved under tmp/case; returns (folder, model)."""
    import torch
    import transformers

    cfg_cls, model_cls, extra = CASES[case]
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
              rms_norm_eps=1e-5, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **extra)
    cfg = getattr(transformers, cfg_cls)(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # wider-than-default weights (and non-zero biases/norms): non-trivial logits
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.1)
            elif name.endswith("bias") or "norm" in name:
                p.normal_(0.0 if "norm" in name and case == "gemma2" else 0.0, 0.3)
                if "norm" in name and case != "gemma2":
                    p.add_(1.0)
    model.config._attn_implementation = "eager"
    path = os.path.join(tmp, case)
    model.save_pretrained(path)
    return path, model


def hf_logits(model, toks) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.asarray(toks)).long()).logits.float().numpy()
