"""Faults that used to lose the test set or show a traceback (issue 12), each through the command line.

Every case checks the exit code, the one-line message, and that what was already written (trials.csv,
study.json, the final model, the ledger) is unchanged or correctly extended.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpstudy.cli import main
from hpstudy.paths import StudyPaths
from hpstudy.records import load_ledger, read_ledger, record_evaluation, study_lock
from tests.test_bad_inputs import fails, snapshot
from tests.test_study import write_study

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def searched(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study searched at 48 px with --set (its YAML says 32 px) and finalized without the --set."""
    folder = tmp_path_factory.mktemp("searched")
    study_yaml = write_study(folder, "base", sample_data, {"type": "random", "max_trials": 1, "epochs": 1})
    assert main(["search", str(study_yaml), "--set", "image_size=48"]) == 0
    assert main(["finalize", str(study_yaml)]) == 0
    return folder


@pytest.fixture
def study(searched: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "studies"
    shutil.copytree(searched, copy, symlinks=True)
    return copy / "base.yaml"


def paths_of(study_yaml: Path) -> StudyPaths:
    return StudyPaths(study_yaml.parent / "base")


def statuses(paths: StudyPaths) -> list[str]:
    return [entry["status"] for entry in read_ledger(paths.ledger)]


# --------------------------------------------------------------------------- 1. overrides belong to the study
def test_later_stages_use_the_searchs_overrides(study: Path, capsys: pytest.CaptureFixture) -> None:
    import keras

    paths = paths_of(study)
    model = keras.models.load_model(paths.model_file("final"))
    assert tuple(model.inputs[0].shape[1:3]) == (48, 48), "finalize trained at the YAML's 32 px"
    assert main(["evaluate", str(study)]) == 0
    out = capsys.readouterr().out
    assert "uses the search's, frozen in" in out and "image_size: [48, 48] -> [32, 32]" in out
    assert statuses(paths) == ["started", "completed"]


def test_an_override_that_differs_from_the_search_is_refused(study: Path, capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    before = snapshot(paths.root)
    fails(["finalize", str(study), "--set", "image_size=64"], capsys,
          "would differ from what the search ran with", "image_size: [48, 48] -> [64, 64]", "study.yaml")
    assert snapshot(paths.root) == before


def test_a_later_stage_may_change_its_own_settings(study: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(paths_of(study).final_dir)
    assert main(["finalize", str(study), "--set", "finalize.scale_epochs=true"]) == 0
    assert "scaled by 100/80" in capsys.readouterr().out
    assert json.loads(paths_of(study).best_config.read_text())["scaled_by_data_ratio"] is True


def test_the_data_path_of_the_search_is_remembered(study: Path) -> None:
    config = yaml.safe_load(study.read_text())
    config["data"] = None  # as the shipped studies: data given with --data to the search only
    study.write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(study)]) == 0
    assert statuses(paths_of(study)) == ["started", "completed"]


def test_other_data_than_the_searchs_is_refused(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                sample_data: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(sample_data, other)
    victim = sorted((other / "train").glob("*/*.png"))[0]
    victim.write_bytes(sorted((other / "train").glob("*/*.png"))[1].read_bytes())
    fails(["evaluate", str(study), "--data", str(other)], capsys, "are not the ones the search used",
          str(other))
    assert statuses(paths_of(study)) == []


def test_a_model_that_does_not_fit_the_test_images_is_refused_before_it_sees_them(
        study: Path, capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    stats = json.loads(paths.data_stats.read_text())
    stats["image_size"] = [32, 32]  # the images would be prepared at another size than the model takes
    paths.data_stats.write_text(json.dumps(stats))
    fails(["evaluate", str(study)], capsys, "takes images of 48x48x1", "prepares 32x32x1",
          "The test set was not used")
    assert statuses(paths) == [], "nothing may be recorded as shown"


# --------------------------------------------------------------------------- 2. a failed evaluation
def test_disk_full_while_writing_the_metrics_is_recorded_as_failed_and_retried(
        study: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpstudy.evaluate as evaluate

    paths = paths_of(study)
    real = evaluate.write_metrics

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(paths.metrics_json("final")))

    monkeypatch.setattr(evaluate, "write_metrics", full)
    fails(["evaluate", str(study)], capsys, "No space left on device", "metrics.json", "recorded as failed",
          "run the same command again")
    assert statuses(paths) == ["started", "failed"]
    assert "No space left" in read_ledger(paths.ledger)[-1]["reason"]
    monkeypatch.setattr(evaluate, "write_metrics", real)
    assert main(["evaluate", str(study)]) == 0, "a failed attempt does not use the test set up"
    assert "the last evaluation of this model on the test split failed" in capsys.readouterr().out
    assert statuses(paths) == ["started", "failed", "started", "completed"]


def test_disk_full_while_drawing_keeps_the_metrics_and_a_rerun_draws_the_figures(
        study: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpstudy.metrics_figures as figures

    paths = paths_of(study)
    real = figures.plot_roc
    monkeypatch.setattr(figures, "plot_roc", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", str(paths.evaluation_of("final") / "roc.png"))))
    fails(["evaluate", str(study)], capsys, "the metrics are saved", "roc.png", "draw them from the saved")
    assert paths.metrics_json("final").is_file() and statuses(paths) == ["started", "completed"]
    monkeypatch.setattr(figures, "plot_roc", real)
    assert main(["evaluate", str(study)]) == 0
    assert "no new evaluation" in capsys.readouterr().out
    assert (paths.evaluation_of("final") / "roc.png").is_file()
    assert statuses(paths) == ["started", "completed"], "redrawing is not an evaluation"


def test_disk_full_in_finalize_is_one_line_and_keeps_the_final_model(
        study: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpstudy.models.training as training

    paths = paths_of(study)
    shutil.rmtree(paths.final_dir)  # a first finalize
    before = snapshot(paths.root)
    monkeypatch.setattr(training, "save_and_verify", lambda model, path, probe: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", str(path))))
    fails(["finalize", str(study)], capsys, "No space left on device", "model.keras",
          "what was already written is kept")
    assert snapshot(paths.root) == before


@pytest.mark.parametrize("command", ["search", "export", "evaluate"])
def test_a_read_only_study_folder_is_one_line(study: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    import hpstudy._io as io

    paths = paths_of(study)
    before = snapshot(paths.root)

    def read_only(path: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(io, "_fsync_file", read_only)
    argv = [command, str(study)] + (["--set", "image_size=48", "--set", "oracle.max_trials=2"]
                                    if command == "search" else [])
    fails(argv, capsys, "Read-only file system", str(paths.root))
    after = snapshot(paths.root)
    assert after == before
    assert statuses(paths) == [], "the first write (the leak table) fails before the model sees a test image"


# --------------------------------------------------------------------------- 3. the ledger
def test_a_torn_ledger_line_stays_apart_and_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hpstudy.errors import EvaluationError
    from hpstudy.records import check_first_evaluation

    ledger = tmp_path / "test_ledger.jsonl"
    sha = "ab" * 32
    record_evaluation(ledger, {"model": "final", "model_sha256": "cd" * 32, "status": "completed"})
    with open(ledger, "a", encoding="utf-8") as handle:  # a writer killed mid-append
        handle.write(json.dumps({"model": "final", "model_sha256": sha, "status": "started"})[:60])
    record_evaluation(ledger, {"model": "finetune", "model_sha256": "ef" * 32, "status": "completed"})
    lines = ledger.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["model"] == "finetune", "the new record merged into the torn one"
    parsed = load_ledger(ledger)
    assert [e["model"] for e in parsed.entries] == ["final", "finetune"] and [n for n, _ in parsed.unreadable] == [2]
    assert "line 2 is not a ledger record" in capsys.readouterr().out
    with pytest.raises(EvaluationError, match="torn ledger line 2"):
        check_first_evaluation(ledger, sha)


# --------------------------------------------------------------------------- 4. one writer per study
def _hold_lock(paths: StudyPaths) -> subprocess.Popen:
    code = ("import sys, time; from hpstudy.paths import StudyPaths; from hpstudy.records import study_lock\n"
            f"with study_lock(StudyPaths({str(paths.root)!r}), command='search'):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_and_kill_9_leaves_no_stale_lock(study: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    before = snapshot(paths.root)
    holder = _hold_lock(paths)
    try:
        for argv in (["search", str(study), "--set", "image_size=48"], ["finalize", str(study)],
                     ["evaluate", str(study)], ["export", str(study)]):
            fails(argv, capsys, "study base is in use by PID", f"PID {holder.pid} on", "since", "(search)")
        assert main(["status", str(study)]) == 0, "status only reads: it works while a search runs"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert snapshot(paths.root) == before
    with study_lock(paths, command="test"), study_lock(paths, command="nested"):  # free again, and re-entrant
        pass


# --------------------------------------------------------------------------- 5. corrupt Keras Tuner files
def test_a_truncated_oracle_json_is_named(study: Path, capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    paths.oracle_json.write_text(paths.oracle_json.read_text()[:40])
    before = snapshot(paths.root)
    fails(["search", str(study), "--set", "image_size=48"], capsys, str(paths.oracle_json), "is broken",
          "Restore it from a backup", "--overwrite")
    assert snapshot(paths.root) == before


def test_a_truncated_trial_json_is_named_and_trials_csv_kept(study: Path, capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    trial = sorted(paths.tuner_dir.glob("trial_*/trial.json"))[0]
    trial.write_text(trial.read_text()[:50])
    before = snapshot(paths.root)
    fails(["export", str(study)], capsys, str(trial), "is broken")
    fails(["search", str(study), "--set", "image_size=48"], capsys, str(trial), "is broken")
    assert snapshot(paths.root) == before


def test_export_never_replaces_trials_csv_with_a_shorter_one(study: Path, capsys: pytest.CaptureFixture) -> None:
    paths = paths_of(study)
    trial_dir = sorted(paths.tuner_dir.glob("trial_*"))[0]
    shutil.rmtree(trial_dir)
    before = snapshot(paths.root)
    fails(["export", str(study)], capsys, "holds finished trial(s)", trial_dir.name.removeprefix("trial_"),
          "it was left as it is")
    assert snapshot(paths.root) == before


# --------------------------------------------------------------------------- 6. small ones
def test_gradcam_layer_and_per_group_errors_are_one_line(study: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(study)]) == 0
    fails(["gradcam", str(study), "--layer", "nope"], capsys, "layer 'nope' is not a layer of", "candidates")
    for bad in ("-1", "0"):
        with pytest.raises(SystemExit) as exited:
            main(["gradcam", str(study), "--per-group", bad])
        assert exited.value.code == 2 and "must be a whole number >= 1" in capsys.readouterr().err


def test_gradcam_says_which_groups_are_empty(study: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    paths = paths_of(study)
    assert main(["evaluate", str(study)]) == 0
    predictions = pd.read_csv(paths.predictions_csv("final"))
    assert main(["gradcam", str(study), "--per-group", "1"]) == 0
    out = capsys.readouterr().out
    labels, predicted = predictions["label"], predictions["probability"] >= 0.5
    empty = [g for g, rows in {"TP": labels.eq(1) & predicted, "TN": labels.eq(0) & ~predicted,
                               "FP": labels.eq(0) & predicted, "FN": labels.eq(1) & ~predicted}.items()
             if not rows.any()]
    for group in empty:
        assert f"no {group}" in out or f", {group}" in out, out
    if not empty:
        assert "no figure for it" not in out


def test_a_seed_that_is_not_a_whole_number_says_so(study: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["search", str(study), "--set", "seed=abc"], capsys, "seed: must be a whole number, but got 'abc'")


# --------------------------------------------------------------------------- 7. the newcomer's path
def test_version_and_help_texts(capsys: pytest.CaptureFixture) -> None:
    import hpstudy

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and hpstudy.__version__ in capsys.readouterr().out
    for argv, expected in ((["gradcam", "--help"], "(default: 4)"), (["status", "--help"], "(default: 5)"),
                           (["evaluate", "--help"], "(default: final)"), (["explore", "--help"], "(default: 128)"),
                           (["explore", "--help"], "the one named like covid"), (["--help"], "beside its YAML")):
        with pytest.raises(SystemExit):
            main(argv)
        assert expected in " ".join(capsys.readouterr().out.split()), argv


def test_data_errors_come_before_tensorflow_is_imported(tmp_path: Path) -> None:
    study = write_study(tmp_path, "early", tmp_path / "no-such-data", {"type": "random", "max_trials": 1, "epochs": 1})
    code = ("import sys; from hpstudy.cli import main; rc = main(['search', sys.argv[1]]); "
            "print('tensorflow' in sys.modules, rc)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "1"], result.stderr
    assert "no-such-data" in result.stderr and time.monotonic() - started < 60
