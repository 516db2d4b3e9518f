"""Crash safety: SIGKILL at named points of a real run, then the same command again.

``HPSTUDY_TEST_KILL_AT=write:<file>[#n]`` (test-only, see ``hpstudy._io.kill_point``) kills the process
with SIGKILL after the n-th temporary copy of ``<file>`` is complete and before it is renamed into place:
the worst moment for a writer. After the rerun the study must be complete, every trial and model saved
before the kill must be unchanged, and no half-written or temporary file may be left. (SIGKILL at an
arbitrary moment of a trial is tested in ``test_study.py``; of a distributed worker in
``test_distributed.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpstudy._io import file_sha256
from hpstudy.trials import trials_frame
from tests.test_study import write_study

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _hpstudy(*args: str, kill_at: str | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**ENV, "HPSTUDY_TEST_KILL_AT": kill_at} if kill_at else ENV
    return subprocess.run([sys.executable, "-m", "hpstudy.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stdout[-3000:] + result.stderr[-3000:]


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _completed_scores(run_dir: Path) -> dict[str, float]:
    """Scores of the completed trials, from Keras Tuner's own trial.json files (the resume point)."""
    scores = {}
    for path in (run_dir / "tuner").glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())  # must parse: never half-written
        if trial["status"] == "COMPLETED":
            scores[trial["trial_id"]] = trial["score"]
    return scores


def _temporaries(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.hpstmp*"))


def _assert_consistent(run_dir: Path, trials: int, before: dict[str, float]) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert len(table) == trials and table["trial_id"].is_unique and set(table["status"]) == {"COMPLETED"}
    after = table.set_index("trial_id")["score"]
    assert after.loc[list(before)].tolist() == pytest.approx(list(before.values())), "a completed trial changed"
    rebuilt = trials_frame(run_dir / "tuner", hp_names=None)
    assert rebuilt["trial_id"].tolist() == table["trial_id"].tolist()
    for name in ("study.json", "study.yaml", "data_stats.json"):
        (json.loads if name.endswith(".json") else yaml.safe_load)((run_dir / name).read_text())
    assert json.loads((run_dir / "study.json").read_text())["status"] == "finished"
    assert not _temporaries(run_dir), f"left behind: {_temporaries(run_dir)}"
    return table


def test_killed_while_writing_the_trials_table(sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "crash", sample_data, {"type": "random", "max_trials": 3,
                                                                        "epochs": 1})
    run_dir = tmp_path / "studies" / "crash"
    _killed(_hpstudy("search", str(study_yaml), kill_at="write:trials.csv#2"))
    assert len(list(run_dir.glob(".trials.hpstmp*"))) == 1, "the kill should leave the complete temporary copy"
    table = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert len(table) == 1 and table["status"].tolist() == ["COMPLETED"], "the previous table stays whole"
    before = _completed_scores(run_dir)
    assert len(before) == 2

    output = _ok(_hpstudy("search", str(study_yaml)))
    assert "ran 1 trial(s) now, 3 in all" in output
    _assert_consistent(run_dir, 3, before)


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "write:history.csv#1",  # during trial 0, after its epochs
    "write:hpstudy_trial.json#2",  # trial 0 ended, its memory record (never rewritten) killed: swept on resume
    "write:hpstudy_trial.json#3",  # during trial 1, its history written
    "write:oracle.json#2",  # trial 0 ended: trial.json says COMPLETED, oracle.json still says running
    "write:oracle.json#4",  # trial 1 created: its trial.json exists, oracle.json does not know it
    "write:trial.json#3",
    "write:study.json#3",
])
def test_killed_at_other_points_of_the_search(sample_data: Path, tmp_path: Path, point: str) -> None:
    study_yaml = write_study(tmp_path / "studies", "crash", sample_data, {"type": "random", "max_trials": 3,
                                                                        "epochs": 1})
    run_dir = tmp_path / "studies" / "crash"
    _killed(_hpstudy("search", str(study_yaml), kill_at=point))
    before = _completed_scores(run_dir)
    output = _ok(_hpstudy("search", str(study_yaml)))
    assert f"ran {3 - len(before)} trial(s) now, 3 in all" in output, "a completed trial was run again"
    _assert_consistent(run_dir, 3, before)


def _finalized(run_dir: Path) -> tuple[str, dict]:
    record = json.loads((run_dir / "final" / "best_config.json").read_text())
    model = run_dir / "final" / "model.keras"
    assert file_sha256(model) == record["model_sha256"], "best_config.json does not describe model.keras"
    assert {"history.csv", "curves.png"} <= {p.name for p in (run_dir / "final").iterdir()}
    return file_sha256(model), record


@pytest.mark.slow
def test_killed_during_finalize(sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "fin", sample_data, {"type": "random", "max_trials": 2,
                                                                      "epochs": 2})
    run_dir = tmp_path / "studies" / "fin"
    _ok(_hpstudy("search", str(study_yaml)))
    trials_before = (run_dir / "trials.csv").read_bytes()

    _killed(_hpstudy("finalize", str(study_yaml), kill_at="write:model.keras"))
    assert not (run_dir / "final" / "model.keras").exists() and len(_temporaries(run_dir)) == 1
    _killed(_hpstudy("finalize", str(study_yaml), kill_at="write:best_config.json"))
    assert (run_dir / "final" / "model.keras").exists() and not (run_dir / "final" / "best_config.json").exists()

    _ok(_hpstudy("finalize", str(study_yaml)))
    sha, _ = _finalized(run_dir)
    assert not _temporaries(run_dir) and (run_dir / "trials.csv").read_bytes() == trials_before
    again = _ok(_hpstudy("finalize", str(study_yaml)))
    assert "already saved" in again and _finalized(run_dir)[0] == sha, "a rerun replaced the saved final model"


HEAD_SPACE = {"family": "resnet50v2_head", "hyperparameters": {
    "dense_units": {"type": "choice", "values": [8]},
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 3.0e-3, "log": True},
    "batch_size": {"type": "choice", "values": [16]},
}}


@pytest.mark.slow
def test_killed_during_fine_tuning_keeps_the_final_model(sample_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir(parents=True)
    (folder / "head.yaml").write_text(yaml.safe_dump(HEAD_SPACE))
    study = {"name": "ft", "data": str(sample_data), "family": "resnet50v2_head", "search_space": "head.yaml",
             "weights": "none", "image_size": [32, 32], "normalization": "fixed", "augmentation": False, "seed": 1,
             "oracle": {"type": "random", "max_trials": 1, "epochs": 1},
             "early_stopping": {"monitor": "val_auc", "patience": 1},
             "finetune": {"unfreeze": "top_blocks", "top_blocks": 1, "epochs": 1, "max_retries": 1,
                          "learning_rate": 1.0e-5}}
    study_yaml = folder / "ft.yaml"
    study_yaml.write_text(yaml.safe_dump(study))
    run_dir = folder / "ft"
    _ok(_hpstudy("search", str(study_yaml)))

    _killed(_hpstudy("finalize", str(study_yaml), kill_at="write:lr_backoff.json"))
    sha, record = _finalized(run_dir)  # the head model was saved before fine-tuning started
    assert not (run_dir / "finetune" / "lr_backoff.json").exists()

    output = _ok(_hpstudy("finalize", str(study_yaml)))
    assert "already saved" in output and _finalized(run_dir) == (sha, record), "the saved final model was lost"
    backoff = json.loads((run_dir / "finetune" / "lr_backoff.json").read_text())
    assert backoff["kept"] in ("finetuned", "head") and backoff["attempts"]
    if backoff["kept"] == "finetuned":
        from hpstudy.evaluate import model_path
        from hpstudy.paths import StudyPaths

        assert model_path(StudyPaths(run_dir), "finetune").is_file()
    assert not _temporaries(run_dir)
