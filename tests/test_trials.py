"""Trials table and boundary check: pure functions tested on hand-made tuner directories."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hpstudy.boundary import boundary_flags
from hpstudy.config import parse_search_space
from hpstudy.errors import StudyError
from hpstudy.trials import (
    BASE_COLUMNS,
    TIMING_COLUMNS,
    best_trial,
    load_trials,
    trials_frame,
    useful_fraction,
    write_trials_csv,
)

SPACE = parse_search_space({
    "family": "baseline_cnn",
    "hyperparameters": {
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True, "default": 1.0e-3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.2},
        "dense_units": {"type": "choice", "values": [32, 64, 128], "default": 64},
        "optimizer": {"type": "choice", "values": ["adam", "sgd"], "default": "adam"},
    },
})


def _write_trial(tuner_dir: Path, trial_id: str, *, score: float | None, status: str = "COMPLETED",
                 values: dict | None = None, meta: dict | None = None) -> None:
    trial_dir = tuner_dir / f"trial_{trial_id}"
    trial_dir.mkdir(parents=True)
    trial = {"trial_id": trial_id, "status": status, "score": score, "message": None,
             "hyperparameters": {"values": values or {}}}
    (trial_dir / "trial.json").write_text(json.dumps(trial))
    if meta is not None:
        (trial_dir / "hpstudy_trial.json").write_text(json.dumps(meta))


def _values(lr: float, dropout: float, units: int, **extra) -> dict:
    return {"learning_rate": lr, "dropout": dropout, "dense_units": units, "optimizer": "adam", **extra}


@pytest.fixture
def tuner_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tuner"
    meta = {"seconds": 3.5, "epochs_run": 4, "best_epoch": 3,
            "best_metrics": {"val_auc": 0.9, "loss": 0.3, "auc": 0.95, "val_loss": 0.4}}
    _write_trial(root, "0002", score=0.80, values=_values(1e-3, 0.2, 64, **{"tuner/bracket": 1, "tuner/round": 0}),
                 meta=meta)
    _write_trial(root, "0000", score=0.90, values=_values(1e-2, 0.25, 128), meta=meta)
    _write_trial(root, "0001", score=None, status="FAILED", values=_values(1e-4, 0.0, 32))
    return root


def test_trials_frame_has_fixed_column_order_and_one_row_per_trial(tuner_dir: Path) -> None:
    frame = trials_frame(tuner_dir, hp_names=SPACE.names)
    assert list(frame.columns[:6]) == list(BASE_COLUMNS)
    assert list(frame["trial_id"]) == ["0000", "0001", "0002"]
    hp_columns = [c for c in frame.columns if c.startswith("hp_")]
    assert hp_columns == [f"hp_{n}" for n in SPACE.names]
    metric_columns = frame.columns[6 + len(hp_columns):].tolist()
    assert metric_columns[:4] == ["loss", "auc", "val_loss", "val_auc"]
    assert metric_columns[-12:] == ["hb_bracket", "hb_round", "message", "pid", "rss_mib", *TIMING_COLUMNS]
    assert frame.loc[frame.trial_id == "0001", "status"].item() == "FAILED"


def test_timing_columns_come_from_the_trial_metadata_and_give_the_useful_fraction(tmp_path: Path) -> None:
    timing = {"wall_s": 10.0, "useful_s": 6.0, "overhead_s": 4.0, "start_s": 1.0, "build_s": 0.5, "trace_s": 2.0,
              "checkpoint_s": 0.1}
    _write_trial(tmp_path / "t", "0", score=0.8, meta={"seconds": 9.0, "timing": timing})
    _write_trial(tmp_path / "t", "1", score=0.7, meta={"seconds": 4.0, "timing": {**timing, "wall_s": 6.0,
                                                                                   "useful_s": 1.0}})
    _write_trial(tmp_path / "t", "2", score=0.6, meta={"seconds": 4.0})  # measured before the timings existed
    frame = trials_frame(tmp_path / "t")
    assert frame.loc[0, list(TIMING_COLUMNS)].tolist() == [timing[c] for c in TIMING_COLUMNS]
    assert frame["wall_s"].isna().tolist() == [False, False, True]
    assert useful_fraction(frame) == pytest.approx(7.0 / 16.0), "sum useful over sum wall, untimed trials left out"
    assert useful_fraction(frame.drop(columns=["wall_s"])) is None
    assert useful_fraction(frame.iloc[2:]) is None


def test_write_and_load_round_trip_keeps_trial_ids_as_text(tuner_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "trials.csv"
    write_trials_csv(tuner_dir, csv, hp_names=SPACE.names)
    loaded = load_trials(csv)
    assert list(loaded["trial_id"]) == ["0000", "0001", "0002"]
    assert not list(tmp_path.glob(".trials*")), "temporary file left behind"


def test_best_trial_picks_highest_completed_score(tuner_dir: Path) -> None:
    frame = trials_frame(tuner_dir)
    assert best_trial(frame, direction="max")["trial_id"] == "0000"
    assert best_trial(frame, direction="min")["trial_id"] == "0002"


def test_best_trial_without_completed_trials_is_an_error(tmp_path: Path) -> None:
    _write_trial(tmp_path / "t", "0", score=None, status="FAILED")
    with pytest.raises(StudyError, match="no completed trial"):
        best_trial(trials_frame(tmp_path / "t"))


def test_load_trials_missing_table_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="no trials table at .*trials.csv"):
        load_trials(tmp_path)


def test_boundary_flags_log_range_and_ordered_choice(tuner_dir: Path) -> None:
    flags = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tuner_dir), SPACE, direction="max")}
    # best trial 0000: lr 1e-2 at the high end of a log range, dense_units 128 the last choice.
    assert flags["learning_rate"]["side"] == "high"
    assert flags["learning_rate"]["suggested_limit"] == pytest.approx(0.1)
    assert flags["dense_units"]["side"] == "high" and flags["dense_units"]["suggested_limit"] == 256
    # 0.25 is mid-range for dropout in [0, 0.5]; optimizer is an unordered choice.
    assert "dropout" not in flags and "optimizer" not in flags


def test_boundary_at_hard_limit_is_reported_not_extendable(tmp_path: Path) -> None:
    _write_trial(tmp_path / "t", "0", score=0.9, values=_values(1e-3, 0.0, 64))
    flags = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tmp_path / "t"), SPACE)}
    assert flags["dropout"]["side"] == "low"
    assert flags["dropout"]["extendable"] is False
    assert "learning_rate" not in flags  # 1e-3 is the middle of [1e-4, 1e-2] on the log scale


def test_boundary_next_to_limit_counts_within_ten_percent(tmp_path: Path) -> None:
    _write_trial(tmp_path / "t", "0", score=0.9, values=_values(1e-3, 0.48, 64))
    _write_trial(tmp_path / "t", "1", score=0.8, values=_values(1e-3, 0.30, 64))
    flags = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tmp_path / "t"), SPACE)}
    assert flags["dropout"]["side"] == "high"
    assert flags["dropout"]["trials_at_limit"] == "1/2"
    assert flags["dropout"]["suggested_limit"] == pytest.approx(0.75)


def test_empty_tuner_dir_gives_empty_table(tmp_path: Path) -> None:
    frame = trials_frame(tmp_path)
    assert frame.empty and list(frame.columns[:6]) == list(BASE_COLUMNS)
    assert boundary_flags(frame, SPACE) == []
    assert isinstance(frame, pd.DataFrame)


def test_boundary_exact_end_wins_in_a_narrow_int_range(tmp_path: Path) -> None:
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        "n_dense": {"type": "int", "low": 1, "high": 2},
        "kernel_size": {"type": "choice", "values": [5, 7]}}})
    _write_trial(tmp_path / "t", "0", score=0.9, values={"n_dense": 2, "kernel_size": 5})
    flags = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tmp_path / "t"), space)}
    assert flags["n_dense"]["side"] == "high" and flags["n_dense"]["suggested_limit"] == 3
    assert flags["kernel_size"]["suggested_limit"] == 3, "evenly spaced choices extend by their step"


def test_boundary_suggests_nothing_past_a_hard_limit(tmp_path: Path) -> None:
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        "kernel_size": {"type": "choice", "values": [3, 5]}}})
    _write_trial(tmp_path / "t", "0", score=0.9, values={"kernel_size": 3})
    flags = boundary_flags(trials_frame(tmp_path / "t"), space)
    assert flags and flags[0]["suggested_limit"] is None, "a 1x1 kernel is not spatial: 3 is the hard limit"


def test_boundary_ignores_hyperparameters_inactive_in_the_best_trials(tmp_path: Path) -> None:
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.99}}})
    _write_trial(tmp_path / "t", "0", score=0.9, values={"optimizer": "adam", "momentum": 0.8})
    assert boundary_flags(trials_frame(tmp_path / "t"), space) == []
    _write_trial(tmp_path / "t", "1", score=0.5, values={"optimizer": "sgd", "momentum": 0.8})
    flags = boundary_flags(trials_frame(tmp_path / "t"), space)
    assert [f["hyperparameter"] for f in flags] == ["momentum"] and flags[0]["trials_at_limit"] == "1/1"


def test_boundary_ignores_dense_settings_of_trials_without_a_dense_layer(tmp_path: Path) -> None:
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        "n_dense": {"type": "int", "low": 0, "high": 2},
        "dense_units": {"type": "choice", "values": [32, 64, 128]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5}}})
    _write_trial(tmp_path / "t", "0", score=0.95, values={"n_dense": 0, "dense_units": 128, "dropout": 0.45})
    flagged = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tmp_path / "t"), space)}
    assert not {"dense_units", "dropout"} & set(flagged), f"no dense layer, yet flagged: {set(flagged)}"
    _write_trial(tmp_path / "t", "1", score=0.9, values={"n_dense": 1, "dense_units": 128, "dropout": 0.45})
    flagged = {f["hyperparameter"]: f for f in boundary_flags(trials_frame(tmp_path / "t"), space)}
    assert flagged["dense_units"]["trials_at_limit"] == flagged["dropout"]["trials_at_limit"] == "1/1", \
        "judged on the trials that had a dense layer"
