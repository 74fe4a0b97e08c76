"""Kernels for the hot paths: fused loss / log-prob, sampling, decode attention.

Each has a pure-JAX reference beside it, a chunked pure-XLA path (CPU, fallback), a Triton
Pallas path (GPU; the fused loss in `kernels.gpu_fused_logprob`, tiles from `kernels.gpu_tiling`)
and a VMEM-tiled Mosaic path (TPU: `kernels.tpu_*`, tiles from `kernels.tpu_tiling`);
`KernelChoice` / the `kernels` config block picks one (see `kernels.dispatch`).
"""

from kernels.decode_attention import decode_attention, decode_attention_reference
from kernels.dispatch import IMPLS, KernelChoice, resolve
from kernels.fused_logprob import fused_log_probs, fused_log_probs_reference, output_projection
from kernels.sampling import choose_tokens

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
