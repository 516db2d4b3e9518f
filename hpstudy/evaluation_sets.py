"""The sets a finalized model is evaluated on, prepared as the study prepares its images.

``load_test_set`` reads the study's own test split (after repeating the leak check with it included);
``load_external_set`` reads an external set (``evaluate --external NAME=PATH``): a folder or zip with a
``test/`` split or the class folders at its top, with the study's class names, resized and normalized
with the study's train-fitted statistics, after a leak check between it and the study's train/val/test.
Neither shows an image to a model; ``hpstudy.evaluate`` does, once per model and set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy.config import SAFE_NAME, StudyConfig, frozen_fingerprint
from hpstudy.errors import ConfigError
from hpstudy.paths import StudyPaths

__all__ = ["EvaluationSet", "external_sets", "load_test_set", "load_external_set", "set_label"]

TEST = "test"


@dataclass(frozen=True)
class EvaluationSet:
    """Images, labels and relative paths of one set, the train statistics, and how many leak pairs it has."""

    dataset: str
    x: np.ndarray
    y: np.ndarray
    names: list[str]
    stats: dict[str, Any]
    leaks: int
    origin: Path


def set_label(dataset: str) -> str:
    """``test split`` or ``external set NAME``, for titles and messages."""
    return "test split" if dataset == TEST else f"external set {dataset}"


def external_sets(sets: Mapping[str, str | Path] | Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` strings (or a NAME -> PATH mapping) as a checked mapping, in the order given.

    Raises:
        ConfigError: no set, a missing ``=``, a NAME that is not a safe folder name or is ``test``, or a
            NAME given twice.
    """
    items = list(sets.items()) if isinstance(sets, Mapping) else [_split(text) for text in sets]
    if not items:
        raise ConfigError("--external needs at least one NAME=PATH")
    named: dict[str, Path] = {}
    for name, path in items:
        if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", "..", TEST):
            raise ConfigError(f"--external {name}={path}: NAME must be a safe folder name (letters, digits, _ . -) "
                              f"other than {TEST!r} (the study's own split), but got {name!r}")
        if name in named:
            raise ConfigError(f"--external: the name {name!r} is given twice; give each set its own name")
        named[name] = Path(path).expanduser()
    return named


def _split(text: str) -> tuple[str, str]:
    name, sep, path = str(text).partition("=")
    if not sep or not path:
        raise ConfigError(f"--external {text!r} must look like NAME=PATH, e.g. hospital_b=data/hospital_b.zip")
    return name, path


def load_test_set(config: StudyConfig, paths: StudyPaths) -> EvaluationSet:
    """The study's test split, after the leak check across all its splits (``evaluation/leaks_all_splits.csv``)."""
    from hpstudy.data.discover import check_fingerprint, discover
    from hpstudy.data.leak import check_leaks
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    source = discover(config.data, positive_class=config.positive_class, verify=True)
    check_fingerprint(source, frozen_fingerprint(config))
    leaks = check_leaks(source, severity=config.leak_check, out_csv=paths.leaks_all_splits)
    records = source.split(TEST)
    x, y = load_split(records, image_size=tuple(stats["image_size"]))
    return EvaluationSet(TEST, x, y, [str(r.path.relative_to(source.root)) for r in records], stats, int(len(leaks)),
                         source.origin)


def load_external_set(config: StudyConfig, paths: StudyPaths, name: str, path: Path) -> EvaluationSet:
    """An external set with the study's classes, after its leak check against the study's train/val/test.

    The pairs found are written to ``StudyPaths.external_leaks_csv(name)``; ``leak_check`` decides whether
    they warn or stop (``error``: nothing is evaluated).

    Raises:
        DataError: the set is unusable or its class folders differ from the study's (both lists named).
        LeakError: leaks found and ``leak_check: error``.
        StudyError: the study's data is not the search's.
    """
    from hpstudy.data.discover import check_fingerprint, discover, discover_external
    from hpstudy.data.leak import check_external_leaks
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    external = discover_external(path, class_names=stats["class_names"], positive_class=stats["positive_class"])
    study = discover(config.data, positive_class=config.positive_class, verify=False)
    check_fingerprint(study, frozen_fingerprint(config))
    leaks = check_external_leaks(study, external, name=name, severity=config.leak_check,
                                 out_csv=paths.external_leaks_csv(name))
    records = external.split(TEST)
    x, y = load_split(records, image_size=tuple(stats["image_size"]))
    return EvaluationSet(name, x, y, [r.path.relative_to(external.root).as_posix() for r in records], stats,
                         int(len(leaks)), external.origin)
