"""Which implementation a kernel runs: Pallas, a chunked pure-XLA path, or the naive XLA path.

`impl` values: "pallas" (Triton on GPU; on CPU it runs in Pallas interpret mode, for tests),
"chunked" (blocked pure XLA that never materialises the big intermediate), "xla" (the
materialising reference) and "auto" (pallas on GPU, chunked elsewhere). `KernelChoice` carries one
value per kernel; it is hashable, so it can be a static jit argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

IMPLS = ("auto", "pallas", "chunked", "xla")


def resolve(impl: str) -> str:
    """Map "auto" to a concrete path for the default backend; validate the name."""
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel impl {impl!r}; expected one of {IMPLS}")
    if impl != "auto":
        return impl
    # The Pallas kernels are written Triton-style (whole-array refs sliced in-kernel); TPU would
    # need VMEM-tiled variants, so TPU and CPU take the chunked XLA path.
    return "pallas" if jax.default_backend() == "gpu" else "chunked"


def interpret() -> bool:
    """Pallas runs compiled only on GPU/TPU; elsewhere in interpret mode."""
    return jax.default_backend() not in ("gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """The implementation of each kernel ("auto" | "pallas" | "chunked" | "xla")."""

    loss: str = "auto"
    sampling: str = "auto"
    decode_attention: str = "auto"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            resolve(getattr(self, f.name))

    @classmethod
    def from_config(cls, c: Any) -> KernelChoice:
        """From a `kernels` ConfigDict/mapping (missing keys keep their defaults); None -> defaults."""
        if c is None:
            return cls()
        d = dict(c)
        return cls(**{f.name: str(d[f.name]) for f in dataclasses.fields(cls) if f.name in d})
