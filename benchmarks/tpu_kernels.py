"""TPU kernels without a TPU: Mosaic lowering and the VMEM footprint table at the 8B shapes.

For each TPU kernel (`kernels.tpu_*`) at the 8B config's shapes in bf16 (loss: T=8192 tokens per
device, H=4096, V=128,256, forward and both backward kernels, lm_head [H, V] and tied [V, H];
sampling: B=64 rows of V=128,256 logits; decode attention: B=64 rows, S=8192 cache slots, 32/8
heads of 128), this script

* lowers the jitted function for TPU on this machine (`lowering_platforms=("tpu",)`, arguments
  are `jax.ShapeDtypeStruct`s, nothing is allocated) and counts the Mosaic `tpu_custom_call`s;
* prints the tiles and the VMEM footprint of each kernel from its block shapes
  (`kernels.tpu_tiling`: 2 x in/out blocks + scratch + the large f32 temporaries) against the
  16 MiB budget, and the `vmem_limit_bytes` requested where it is exceeded.

Speed needs a TPU and is not measured here.

    python benchmarks/tpu_kernels.py
    python benchmarks/tpu_kernels.py --dtype float32
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kernels import tpu_tiling  # noqa: E402
from kernels.dispatch import lowering_for_tpu  # noqa: E402
from kernels.tpu_decode_attention import decode_attention_tpu  # noqa: E402
from kernels.tpu_fused_logprob import fused_log_probs_tpu  # noqa: E402
from kernels.tpu_sampling import choose_tokens_tpu  # noqa: E402

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bfloat16")
    a = p.parse_args(argv)
    print(f"# TPU kernels, lowering + VMEM — {datetime.date.today()} — jax {jax.__version__}, "
          f"local backend {jax.default_backend()}; shapes {SHAPES_8B}, {a.dtype}")
    print(f"\nVMEM budget {tpu_tiling.VMEM_BUDGET / 2**20:g} MiB (cap {tpu_tiling.VMEM_CAP / 2**20:g} MiB)\n")
    print("| kernel | tiles | VMEM MiB | within 16 MiB | vmem_limit_bytes |")
    print("|---|---|---:|---|---:|")
    for name, tiles, fp in vmem_rows(a.dtype):
        lim = "—" if fp.vmem_limit is None else f"{fp.vmem_limit / 2**20:g} MiB"
        print(f"| {name} | {tiles} | {fp.bytes / 2**20:.2f} | {'yes' if fp.vmem_limit is None else 'no'} | {lim} |")
    print("\n| kernel | lowered for TPU | Mosaic calls | seconds |")
    print("|---|---|---:|---:|")
    for name, (fn, args) in lowering_cases(a.dtype).items():
        t0 = time.perf_counter()
        try:
            txt = lower_for_tpu(fn, args)
            ok, n = "yes", txt.count("tpu_custom_call")
        except Exception as e:  # report every kernel, then fail below
            ok, n = f"NO: {type(e).__name__}: {str(e)[:120]}", 0
        print(f"| {name} | {ok} | {n} | {time.perf_counter() - t0:.2f} |")


if __name__ == "__main__":
    main()
