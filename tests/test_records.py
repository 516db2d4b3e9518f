"""The test ledger refuses a second evaluation of the same model unless forced; probes are not evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpstudy.errors import EvaluationError
from hpstudy.paths import StudyPaths
from hpstudy.records import (
    check_first_evaluation,
    evaluation_entries,
    is_probe,
    ledger_entries,
    read_ledger,
    record_evaluation,
)


def test_second_evaluation_is_refused_and_force_is_allowed(tmp_path: Path) -> None:
    ledger = tmp_path / "evaluation" / "test_ledger.jsonl"
    assert check_first_evaluation(ledger, "abc") == []
    record_evaluation(ledger, {"model": "final", "model_sha256": "abc", "time": "t0"})
    with pytest.raises(EvaluationError, match=r"already evaluated .* at t0 .*--force"):
        check_first_evaluation(ledger, "abc")
    assert len(check_first_evaluation(ledger, "abc", force=True)) == 1
    assert check_first_evaluation(ledger, "other-model") == []


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record_evaluation(ledger, {"model": "final", "model_sha256": "abc"})
    with open(ledger, "a", encoding="utf-8") as handle:
        handle.write('{"model": "fin')  # a crash in the middle of a write
    assert [e["model"] for e in read_ledger(ledger)] == ["final"]


def test_an_evaluation_that_did_not_complete_still_counts_as_a_use(tmp_path: Path) -> None:
    ledger = tmp_path / "test_ledger.jsonl"
    record_evaluation(ledger, {"model": "final", "model_sha256": "abc", "status": "started", "time": "t0"})
    with pytest.raises(EvaluationError, match="already shown to the model .*did not complete"):
        check_first_evaluation(ledger, "abc")


SHA = "f" * 64


def _probe(status: str, attempt: str = "p1") -> dict:
    return {"kind": "probe", "model": "final", "model_sha256": SHA, "dataset": "test", "status": status,
            "attempt": attempt, "time": f"probe-{status}"}


def test_probe_records_are_not_evaluations_and_block_nothing(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    ledger = paths.ledger
    for status in ("started", "completed"):
        record_evaluation(ledger, _probe(status))
    record_evaluation(ledger, _probe("started", attempt="p2"))  # a probe that never finished
    assert check_first_evaluation(ledger, SHA) == []  # no use: the first evaluation needs no --force
    assert evaluation_entries(paths) == [] and len(ledger_entries(paths)) == 3 and is_probe(ledger_entries(paths)[0])
    record_evaluation(ledger, {"model": "final", "model_sha256": SHA, "dataset": "test", "status": "completed",
                               "time": "t1"})
    record_evaluation(ledger, _probe("completed", attempt="p3"))
    with pytest.raises(EvaluationError, match=r"already evaluated on the test split at t1 "):
        check_first_evaluation(ledger, SHA)  # the evaluation is the use, not the probes around it
    earlier = check_first_evaluation(ledger, SHA, force=True)
    assert [e["time"] for e in earlier] == ["t1"]  # a forced repeat counts one earlier use


def test_a_torn_probe_line_is_not_counted_as_a_use(tmp_path: Path) -> None:
    ledger = tmp_path / "test_ledger.jsonl"
    line = json.dumps(_probe("started"), sort_keys=True)
    ledger.write_text(line[:-5] + "\n", encoding="utf-8")  # cut after the SHA-256
    assert SHA[:16] in line[:-5]
    assert check_first_evaluation(ledger, SHA) == []
    evaluation = json.dumps({"model": "final", "model_sha256": SHA, "status": "started"}, sort_keys=True)
    ledger.write_text(evaluation[:-5] + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match="torn ledger line 1"):
        check_first_evaluation(ledger, SHA)
