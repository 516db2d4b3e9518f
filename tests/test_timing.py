"""Where a trial's time goes (hpstudy.search.timing) and the deferred best-epoch checkpoint.

A tiny seeded Hyperband study (continuations load their parent's checkpoint) is run twice in this process:
with the checkpoint written once per fit (the default) and at every improving epoch (Keras Tuner's way).
Scores, epochs and the kept checkpoints must be the same; the timing columns must add up.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from hpstudy.search import tuners
from hpstudy.study import run_study, study_status
from hpstudy.trials import TIMING_COLUMNS, useful_fraction
from tests.test_study import write_study

HYPERBAND = {"type": "hyperband", "max_epochs": 3, "factor": 3, "iterations": 1}  # 6 trials, 3 continuations


def _run(folder: Path, data: Path) -> tuple[pd.DataFrame, Path]:
    outcome = run_study(write_study(folder, "hb", data, HYPERBAND), verbose=False)
    return pd.read_csv(outcome.study_dir / "trials.csv", dtype={"trial_id": str, "hb_parent": str}), outcome.study_dir


def _weights(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as store:
        store.visititems(lambda name, item: out.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return out


def test_deferred_checkpoints_change_no_score_and_the_timings_add_up(sample_data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    deferred, deferred_dir = _run(tmp_path / "deferred", sample_data)
    monkeypatch.setattr(tuners, "DEFER_CHECKPOINTS", False)
    every, every_dir = _run(tmp_path / "every", sample_data)

    assert deferred["hb_parent"].notna().sum() >= 1, "the study has Hyperband continuations (they load checkpoints)"
    assert deferred["score"].tolist() == pytest.approx(every["score"].tolist(), abs=1e-6)
    assert deferred["epochs_run"].tolist() == every["epochs_run"].tolist()
    kept = sorted(p.relative_to(deferred_dir) for p in deferred_dir.glob("tuner/trial_*/checkpoint.weights.h5"))
    assert kept == sorted(p.relative_to(every_dir) for p in every_dir.glob("tuner/trial_*/checkpoint.weights.h5"))
    assert kept, "the best trials keep their checkpoints"
    for path in kept:
        a, b = _weights(deferred_dir / path), _weights(every_dir / path)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f"{path} holds other weights"

    for table in (deferred, every):
        timing = table[list(TIMING_COLUMNS)]
        assert timing.notna().all().all() and (timing >= 0).all().all()
        assert (table["useful_s"] <= table["wall_s"]).all() and (table["useful_s"] > 0).all()
        assert table["overhead_s"].tolist() == pytest.approx((table["wall_s"] - table["useful_s"]).tolist(), abs=2e-3)
        assert (table["wall_s"] >= table["seconds"] - 1e-3).all(), "a trial's wall time holds its run"
        assert 0 < useful_fraction(table) <= 1
    assert deferred.loc[0, "start_s"] > deferred.loc[1:, "start_s"].max(), "the first trial pays the preparation"
    assert "useful work: " in study_status(deferred_dir.parent / "hb.yaml")
