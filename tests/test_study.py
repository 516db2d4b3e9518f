"""End-to-end studies on the real sample images at 32 px: create, resume, refuse, extend, crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpstudy.errors import StudyError
from hpstudy.study import run_study, study_status

TINY_SPACE = {
    "family": "baseline_cnn",
    "hyperparameters": {
        "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True, "default": 3.0e-3},
        "base_filters": {"type": "choice", "values": [4, 8], "default": 4},
        "n_blocks": {"type": "int", "low": 1, "high": 2, "default": 2},
        "dense_units": {"type": "choice", "values": [8, 16], "default": 8},
        "batch_size": {"type": "choice", "values": [16, 32], "default": 16},
    },
}


def write_study(folder: Path, name: str, data: Path, oracle: dict, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    study = {
        "name": name, "data": str(data), "family": "baseline_cnn", "search_space": "space.yaml",
        "oracle": oracle, "early_stopping": {"monitor": "val_auc", "patience": 1},
        "seed": 3, "image_size": [32, 32], "normalization": "dataset",
        "augmentation": {"rotation": 5, "shift": 0.05, "zoom": 0.05}, "weights": "none", **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def corrupt_test_split(data: Path, tmp_path: Path) -> Path:
    """A copy of the data whose test images are not images: any read of the test split fails."""
    copy = tmp_path / "data"
    for split in ("train", "val", "test"):
        for image in sorted((data / split).glob("*/*.png")):
            target = copy / split / image.parent.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if split == "test":
                target.write_bytes(b"this is not a PNG: the test split must stay closed during the search")
            else:
                target.symlink_to(image)
    return copy


def test_random_search_study_creates_resumes_refuses_and_extends(sample_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    data = corrupt_test_split(sample_data, tmp_path)
    study_yaml = write_study(tmp_path / "studies", "rs", data, {"type": "random", "max_trials": 2, "epochs": 2})

    outcome = run_study(study_yaml)
    run_dir = tmp_path / "studies" / "rs"
    table = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert outcome.trials_run == 2 and len(table) == 2
    assert set(table["status"]) == {"COMPLETED"}
    assert table["best_epoch"].between(1, 2).all() and (table["epochs_run"] >= table["best_epoch"]).all()
    assert {"val_auc", "val_accuracy", "val_precision", "val_recall", "auc"} <= set(table.columns)
    assert table["score"].tolist() == pytest.approx(table["val_auc"].tolist())
    stats = json.loads((run_dir / "data_stats.json").read_text())
    assert stats["fitted_on"] == "train" and stats["counts"] == {"train": 80, "val": 20}
    frozen = yaml.safe_load((run_dir / "study.yaml").read_text())
    assert frozen["seed"] == 3 and frozen["versions"]["tensorflow"] and len(frozen["data_fingerprint"]) >= 32
    out = capsys.readouterr().out
    assert "trial 2/2" in out and "ETA <=" in out
    kept = {path.parent.name for path in (run_dir / "tuner").glob("trial_*/checkpoint*")}
    assert kept == {f"trial_{t}" for t in table["trial_id"]}, "the best 3 trials keep their checkpoint"

    again = run_study(study_yaml)
    assert again.trials_run == 0 and again.finished_before
    assert "already complete" in capsys.readouterr().out

    changed = write_study(tmp_path / "studies", "rs", data, {"type": "random", "max_trials": 2, "epochs": 2},
                          normalization="fixed")
    with pytest.raises(StudyError, match=r"normalization: dataset -> fixed(.|\n)*--overwrite"):
        run_study(changed)

    extended = write_study(tmp_path / "studies", "rs", data, {"type": "random", "max_trials": 3, "epochs": 2})
    more = run_study(extended)
    final = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert more.trials_run == 1 and len(final) == 3 and final["trial_id"].is_unique
    assert final.iloc[:2]["score"].tolist() == table["score"].tolist(), "completed trials were rewritten"
    assert "top" in study_status(extended)


def _running_trial(tuner_dir: Path) -> str | None:
    for trial_json in tuner_dir.glob("trial_*/trial.json"):
        try:
            trial = json.loads(trial_json.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if trial.get("status") == "RUNNING":
            return trial["trial_id"]
    return None


def _completed(csv: Path) -> pd.DataFrame:
    if not csv.exists():
        return pd.DataFrame(columns=["trial_id", "status", "score"])
    table = pd.read_csv(csv, dtype={"trial_id": str})
    return table[table["status"] == "COMPLETED"]


def test_hyperband_study_killed_mid_trial_resumes_without_losing_trials(sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "hb", sample_data,
                             {"type": "hyperband", "max_epochs": 3, "factor": 3, "iterations": 1})
    run_dir = tmp_path / "studies" / "hb"
    command = [sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    killed_in = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(_completed(run_dir / "trials.csv")) >= 2 and (killed_in := _running_trial(run_dir / "tuner")):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None and killed_in is None:
            process.kill()
        process.wait(timeout=30)
    assert killed_in is not None, f"never saw a running trial to kill:\n{process.stdout.read().decode()[-3000:]}"
    before = _completed(run_dir / "trials.csv").set_index("trial_id")["score"]

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    table = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert table["trial_id"].is_unique
    assert set(table["status"]) == {"COMPLETED"}
    assert killed_in in set(table["trial_id"]), "the interrupted trial was not re-run"
    after = table.set_index("trial_id")["score"]
    assert after.loc[before.index].tolist() == pytest.approx(before.tolist()), "a completed trial was lost or redone"
    assert {"hb_bracket", "hb_round", "hb_epochs"} <= set(table.columns)
    state = json.loads((run_dir / "study.json").read_text())
    assert state["status"] == "finished" and state["trials_done"] == len(table) == state["planned_trials"]

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0 and "already complete" in finished.stdout


def test_same_seed_reproduces_scores_and_bayesian_oracle_runs(sample_data: Path, tmp_path: Path) -> None:
    oracle = {"type": "bayesian", "max_trials": 2, "epochs": 1, "num_initial_points": 1}
    first = write_study(tmp_path / "a", "bo", sample_data, oracle)
    second = write_study(tmp_path / "b", "bo", sample_data, oracle)
    run_study(first)
    run_study(second)
    table_a = pd.read_csv(tmp_path / "a" / "bo" / "trials.csv", dtype={"trial_id": str})
    table_b = pd.read_csv(tmp_path / "b" / "bo" / "trials.csv", dtype={"trial_id": str})
    assert len(table_a) == 2 and set(table_a["status"]) == {"COMPLETED"}
    hp_columns = [c for c in table_a.columns if c.startswith("hp_")]
    assert table_a[hp_columns].equals(table_b[hp_columns]), "same seed, same hyperparameters"
    assert table_a["score"].tolist() == pytest.approx(table_b["score"].tolist(), abs=1e-6), "same seed, same scores"


def test_finished_hyperband_study_extends_with_more_iterations(sample_data: Path, tmp_path: Path) -> None:
    oracle = {"type": "hyperband", "max_epochs": 2, "factor": 3, "iterations": 1}  # 2 trials per iteration
    study_yaml = write_study(tmp_path / "studies", "hbx", sample_data, oracle)
    first = run_study(study_yaml)
    before = pd.read_csv(tmp_path / "studies" / "hbx" / "trials.csv", dtype={"trial_id": str})
    extended = write_study(tmp_path / "studies", "hbx", sample_data, {**oracle, "iterations": 2})
    second = run_study(extended)
    after = pd.read_csv(tmp_path / "studies" / "hbx" / "trials.csv", dtype={"trial_id": str})
    assert second.trials_run > 0 and second.planned == 2 * first.planned
    assert len(after) == len(before) + second.trials_run and after["trial_id"].is_unique
    merged = before.merge(after, on="trial_id", suffixes=("", "_after"))
    assert merged["score"].tolist() == pytest.approx(merged["score_after"].tolist())
