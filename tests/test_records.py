"""The test ledger refuses a second evaluation of the same model unless forced."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy.errors import EvaluationError
from hpstudy.records import check_first_evaluation, read_ledger, record_evaluation


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
