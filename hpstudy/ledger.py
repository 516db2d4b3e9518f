"""The test ledger: every evaluation of a model on the test split, one JSON line each.

An evaluation writes a ``started`` line just before the model first sees the test images and a
``completed`` line with the metrics; either one makes the next evaluation of that model file a repeat.

The test split is used once per model (DESIGN.md, rule 5). A second evaluation of the same model
file (same SHA-256) is refused unless forced, and a forced one is recorded as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpstudy._io import append_line
from hpstudy.errors import EvaluationError

__all__ = ["read_ledger", "check_first_evaluation", "record_evaluation"]


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
