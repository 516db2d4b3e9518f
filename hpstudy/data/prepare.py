"""Turn a study's data settings into ready arrays and a train-fitted normalizer.

Shared by the search and the finalizer so both see exactly the same pixels. The test split is
never decoded here: only ``evaluate`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy._io import atomic_write_json, read_json
from hpstudy.data.discover import TRAINING_SPLITS, DataSource
from hpstudy.data.leak import check_leaks
from hpstudy.data.pipeline import Normalizer, load_split
from hpstudy.errors import DataError, StudyError

__all__ = ["PreparedData", "prepare_data", "load_data_stats", "ordered_class_names"]


@dataclass(frozen=True)
class PreparedData:
    """Decoded, resized training and validation images with the normalizer fitted on train."""

    source: DataSource
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    normalizer: Normalizer
    image_size: tuple[int, int]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, int(self.x_train.shape[-1]))


def prepare_data(source: DataSource, *, image_size: tuple[int, int], normalization: str,
                 leak_check: str = "warn", leaks_csv: Path | None = None,
                 cache_dir: Path | None = None, stats_path: Path | None = None) -> PreparedData:
    """Load train and val, check them for leaks, fit the normalizer on train only, save its statistics.

    Args:
        source: discovered data.
        image_size: (height, width) after resizing.
        normalization: "fixed", "dataset" or "per_image".
        leak_check: severity of the train/val leak check ("warn", "error", "off").
        leaks_csv: where the leak table is written.
        cache_dir: where decoded arrays are cached between runs.
        stats_path: where ``data_stats.json`` is written (normalizer, classes, size, counts).
    """
    check_leaks(source, severity=leak_check, out_csv=leaks_csv, splits=TRAINING_SPLITS)
    key = source.fingerprint(splits=TRAINING_SPLITS)
    x_train, y_train = load_split(source.split("train"), image_size=image_size, cache_dir=cache_dir, cache_key=key)
    x_val, y_val = load_split(source.split("val"), image_size=image_size, cache_dir=cache_dir, cache_key=key)
    normalizer = Normalizer.fit(normalization, x_train)
    prepared = PreparedData(source, x_train, y_train, x_val, y_val, normalizer, tuple(image_size))
    if stats_path is not None:
        atomic_write_json(stats_path, _stats(prepared))
    return prepared


def _stats(data: PreparedData) -> dict[str, Any]:
    return {
        "normalizer": data.normalizer.to_dict(),
        "fitted_on": "train",
        "class_names": list(data.source.class_names),
        "positive_class": data.source.positive_class,
        "image_size": list(data.image_size),
        "channels": int(data.x_train.shape[-1]),
        "counts": {"train": int(len(data.y_train)), "val": int(len(data.y_val))},
        "positives": {"train": int(data.y_train.sum()), "val": int(data.y_val.sum())},
    }


def load_data_stats(path: Path) -> dict[str, Any]:
    """Read ``data_stats.json`` back (normalizer rebuilt with ``Normalizer.from_dict``)."""
    try:
        stats = read_json(path)
        stats["normalizer"] = Normalizer.from_dict(stats["normalizer"])
    except FileNotFoundError as exc:
        raise StudyError(f"{path} is missing: run `hpstudy search` for this study first") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a valid data statistics file: {exc}") from exc
    return stats


def ordered_class_names(stats: dict[str, Any]) -> list[str]:
    """Class names ordered (negative, positive) for the binary label 0/1 of a ``data_stats.json``."""
    positive = stats["positive_class"]
    negatives = [c for c in stats["class_names"] if c != positive]
    return [" / ".join(negatives), positive]
