"""Typed records of a study run: ``study.json``, ``best_config.json``, ``lr_backoff.json``, metrics, the ledger.

Each record is read and written here only, through ``StudyPaths``; stages exchange these objects instead
of re-reading JSON with their own tolerant readers. Readers that a report uses (missing file -> None)
and readers that a stage depends on (a broken file is a ``StudyError`` naming it) are kept apart.

The test ledger (``evaluation/test_ledger.jsonl``) holds every evaluation of a model on the test split,
one JSON line each: ``started`` just before the model first sees the test images, then ``completed``
with the metrics (or ``failed`` with the reason). The test split is used once per model (rule 5 of
``docs/architecture.md``): a second evaluation of the same model file (same SHA-256) is refused unless
forced, and a forced one is recorded as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpstudy._io import append_line, atomic_write_json, read_json, utc_now
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.paths import StudyPaths

__all__ = ["read_state", "update_state", "BestConfig", "read_best_config", "write_best_config",
           "read_model_record", "read_lr_backoff", "write_lr_backoff", "read_metrics", "write_metrics",
           "read_ledger", "check_first_evaluation", "record_evaluation", "ledger_entries"]


# --------------------------------------------------------------------------- study.json
def read_state(paths: StudyPaths, *, strict: bool = True) -> dict[str, Any]:
    """The study's ``study.json`` (empty dict before the first run, or when broken and not ``strict``).

    Raises:
        StudyError: ``strict`` and the file exists but cannot be read or parsed.
    """
    try:
        state = read_json(paths.state)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise StudyError(f"{paths.state} cannot be read ({exc}); it only records progress: delete it, and "
                         "`hpstudy search` (which resumes from the tuner files) writes it again") from None
    return state if isinstance(state, dict) else {}


def update_state(paths: StudyPaths, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into ``study.json`` (atomically) and return the new state."""
    state = read_state(paths)
    state.update(updates)
    state["updated"] = utc_now()
    atomic_write_json(paths.state, state)
    return state


# --------------------------------------------------------------------------- final/best_config.json
@dataclass(frozen=True)
class BestConfig:
    """What ``finalize`` trained and saved: the winner, its epochs, the normalizer and the model's SHA-256.

    ``extra`` keeps keys this version does not know, so reading and writing back loses nothing.
    """

    trial_id: str
    score: float
    objective: str
    hyperparameters: dict[str, Any]
    best_epoch: int
    epochs: int
    family: str
    model: str
    model_sha256: str
    scaled_by_data_ratio: bool = False
    train_val_images: int = 0
    normalizer: dict[str, Any] = field(default_factory=dict)
    normalizer_fitted_on: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


def read_best_config(paths: StudyPaths) -> BestConfig | None:
    """``final/best_config.json``, or None when it is missing, unreadable or incomplete."""
    data = read_json(paths.best_config, default=None)
    if not isinstance(data, dict):
        return None
    try:
        return BestConfig.from_dict(data)
    except TypeError:  # a required key is missing: not a record this study can trust
        return None


def write_best_config(paths: StudyPaths, record: BestConfig) -> Path:
    return atomic_write_json(paths.best_config, record.to_dict())


# --------------------------------------------------------------------------- finetune/lr_backoff.json
def read_lr_backoff(paths: StudyPaths) -> dict[str, Any] | None:
    """``finetune/lr_backoff.json`` (every fine-tuning attempt and the model kept), or None."""
    data = read_json(paths.lr_backoff, default=None)
    return data if isinstance(data, dict) else None


def write_lr_backoff(paths: StudyPaths, record: dict[str, Any]) -> Path:
    return atomic_write_json(paths.lr_backoff, record)


def read_model_record(paths: StudyPaths, which: str) -> dict[str, Any] | None:
    """The record holding a saved model's SHA-256 (``best_config.json`` or ``lr_backoff.json``), as read.

    Read as plain JSON: whatever else it holds, its ``model_sha256`` decides whether a model file is the
    one the study saved.
    """
    data = read_json(paths.model_record(which), default=None)
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- evaluation/<model>/metrics.json
def read_metrics(paths: StudyPaths, which: str, dataset: str = "test") -> dict[str, Any] | None:
    data = read_json(paths.metrics_json(which, dataset), default=None)
    return data if isinstance(data, dict) else None


def write_metrics(paths: StudyPaths, which: str, result: dict[str, Any], dataset: str = "test") -> Path:
    return atomic_write_json(paths.metrics_json(which, dataset), result)


# --------------------------------------------------------------------------- the test ledger
def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a ledger (a torn last line from a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def ledger_entries(paths: StudyPaths) -> list[dict[str, Any]]:
    """The entries of a study's ledger."""
    return read_ledger(paths.ledger)


def check_first_evaluation(path: str | Path, model_sha256: str, *, force: bool = False) -> list[dict[str, Any]]:
    """Earlier evaluations of this model file; raises unless there are none or ``force`` is set.

    Raises:
        EvaluationError: the model was already evaluated on the test split and ``force`` is False.
    """
    earlier = [e for e in read_ledger(path) if e.get("model_sha256") == model_sha256]
    if earlier and not force:
        first = earlier[0]
        how = "evaluated" if any(e.get("status", "completed") == "completed" for e in earlier) else \
            "shown to the model (an evaluation that did not complete)"
        raise EvaluationError(
            f"model {first.get('model')} (sha256 {model_sha256[:12]}…) was already {how} on the test split "
            f"at {first.get('time')} (ledger {path}). The test set is used once; pass --force to evaluate again "
            "(the repeat is recorded in the ledger)."
        )
    return earlier


def record_evaluation(path: str | Path, entry: dict[str, Any]) -> None:
    """Append one evaluation to the ledger."""
    append_line(path, json.dumps(entry, sort_keys=True))

