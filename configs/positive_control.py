"""Positive control alone: safety SFT that includes triggered prompts with HHH answers.

It must drive the backdoor rate to about zero; if it does not, the pipeline is broken.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.safety.arms = "positive_control"
    return c
