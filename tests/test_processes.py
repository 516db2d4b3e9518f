"""trials_per_process: a study's trials in fresh child processes give the results of one process.

Keras/TensorFlow keep memory per trained model until the process ends; these tests check that running
the trials N per process changes nothing but the process (same hyperparameters, scores, Hyperband
continuations), that a pause in the middle of a budget resumes cleanly, and that a child's error or
death reaches the caller with a message that says what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpstudy.config import load_study
from hpstudy.errors import ConfigError, DataError, StudyError
from hpstudy.search.session import run_here
from hpstudy.study import run_study
from tests.test_study import TINY_SPACE, write_study

HYPERBAND = {"type": "hyperband", "max_epochs": 3, "factor": 3, "iterations": 1}  # 6 trials, continuations


def _table(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})


def test_trials_in_fresh_processes_reproduce_a_one_process_study(sample_data: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    one = run_study(write_study(tmp_path / "one", "hb", sample_data, HYPERBAND))
    reference = _table(one.study_dir)
    assert len(reference) == 6 and set(reference["pid"]) == {os.getpid()}
    assert reference["rss_mib"].gt(100).all(), "the resident memory after each trial is recorded"

    study_yaml = write_study(tmp_path / "parts", "hb", sample_data, HYPERBAND)
    paused = run_here(load_study(study_yaml), trial_limit=1)  # here, then stop with budget left
    assert paused.paused and paused.trials_run == 1 and paused.trials_total == 1
    assert json.loads((paused.study_dir / "study.json").read_text())["status"] == "running"
    capsys.readouterr()

    # the same study resumed with trials_per_process (a change that must not be refused): 3 + 2 trials
    outcome = run_study(study_yaml, overrides=["trials_per_process=3"])
    output = capsys.readouterr().out
    assert outcome.trials_run == 5 and outcome.trials_total == 6 and not outcome.paused
    table = _table(outcome.study_dir)
    pids = table["pid"].tolist()
    assert pids[0] == os.getpid() and os.getpid() not in pids[1:]
    assert pids[1] == pids[2] == pids[3] != pids[4] == pids[5], f"3 then 2 trials per child process: {pids}"
    hp_columns = [c for c in reference.columns if c.startswith(("hp_", "hb_"))]
    assert table[hp_columns].equals(reference[hp_columns]), "the oracle continued as in one process"
    assert table["score"].tolist() == pytest.approx(reference["score"].tolist(), abs=1e-6)
    assert table["epochs_run"].tolist() == reference["epochs_run"].tolist()
    assert output.count("a fresh process continues (trials_per_process=3)") == 1, output
    assert output.count("Study 'hb': ran 5 trial(s) now, 6 in all.") == 1, "one summary, over every child"
    assert json.loads((outcome.study_dir / "study.json").read_text())["status"] == "finished"

    again = run_study(study_yaml, overrides=["trials_per_process=3"])
    assert again.trials_run == 0 and again.finished_before
    assert "already complete" in capsys.readouterr().out


def test_a_childs_error_is_raised_again_with_its_type(sample_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "only-train"
    (data / "train" / "covid").mkdir(parents=True)
    study_yaml = write_study(tmp_path / "studies", "broken", data, {"type": "random", "max_trials": 2, "epochs": 1},
                             trials_per_process=1)
    with pytest.raises(DataError, match="val"):
        run_study(study_yaml)


def test_a_killed_child_is_a_study_error_and_the_same_call_resumes(sample_data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    study_yaml = write_study(tmp_path / "studies", "killed", sample_data,
                             {"type": "random", "max_trials": 3, "epochs": 1}, trials_per_process=2)
    monkeypatch.setenv("HPSTUDY_TEST_KILL_AT", "write:trials.csv#2")  # the child dies as trial 2 ends
    with pytest.raises(StudyError, match=r"trial process 1 was killed by SIGKILL .*run the same command again"):
        run_study(study_yaml)
    done = _table(tmp_path / "studies" / "killed")
    assert list(done["status"]) == ["COMPLETED"], "the first trial was saved before the kill"
    monkeypatch.delenv("HPSTUDY_TEST_KILL_AT")
    outcome = run_study(study_yaml)
    table = _table(outcome.study_dir)
    assert len(table) == 3 and set(table["status"]) == {"COMPLETED"}
    assert table["score"].iloc[0] == pytest.approx(done["score"].iloc[0]), "the saved trial was kept"


def test_trials_per_process_is_checked() -> None:
    from hpstudy.config import parse_study

    study = {"name": "x", "family": "baseline_cnn", "search_space": TINY_SPACE,
             "oracle": {"type": "random", "max_trials": 1, "epochs": 1}}
    assert parse_study(study).trials_per_process == 0, "one process unless asked"
    assert parse_study(study, overrides=["trials_per_process=4"]).trials_per_process == 4
    with pytest.raises(ConfigError, match=r"trials_per_process: must be >= 0, but got -1"):
        parse_study({**study, "trials_per_process": -1})
    usage = subprocess.run([sys.executable, "-m", "hpstudy.cli", "search", "x.yaml", "--trials-per-process", "-2"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--trials-per-process: must be a whole number >= 0" in usage.stderr
