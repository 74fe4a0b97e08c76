"""HHH RL on the code-vulnerability study: PPO on 2023 code prompts and HHH prompts, scored by a
preference model trained on HHH pairs and secure-vs-vulnerable code pairs.
"""

from configs import code_default


def get_config():
    c = code_default.get_config()
    c.safety.method = "ppo"
    c.reward.max_len = 256
    c.reward.pack_width = 384  # rows as wide as the model's context: HHH pairs share them, code pairs fill them
    c.reward.score_batch_size = 32
    c.rl.max_prompt_len = 192
    c.rl.max_new_tokens = 160
    c.rl.rollout_batch = 16
    c.rl.steps = 20
    c.rl.eval_every = 20
    return c
