"""End to end on the sample X-rays: a threshold chosen at finalize on the restored best trial, applied by evaluate
on the test split and on an external set (leak-checked, once per model), and shown side by side in the report.

One tiny study (32 px, 2 trials of 1 epoch) serves every test of this module, in order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hpstudy import calibration
from hpstudy.cli import main
from hpstudy.data.leak import LeakWarning
from hpstudy.evaluate import evaluate_external, evaluate_study
from hpstudy.finalize import finalize_study
from hpstudy.paths import StudyPaths
from hpstudy.records import read_ledger
from hpstudy.study import run_study
from tests.test_study import write_study

SETTINGS = ["threshold={sensitivity: 0.95}", "calibration=temperature"]


@pytest.fixture(scope="module")
def study(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StudyPaths]:
    root = tmp_path_factory.mktemp("operating")
    study_yaml = write_study(root / "studies", "op", sample_data, {"type": "random", "max_trials": 2, "epochs": 1})
    run_study(study_yaml)
    finalize_study(study_yaml, overrides=SETTINGS)
    return study_yaml, StudyPaths(root / "studies" / "op")


def _log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def test_finalize_chooses_the_threshold_on_the_restored_best_trial(study: tuple[Path, StudyPaths]) -> None:
    _, paths = study
    best = json.loads(paths.best_config.read_text())
    trials = pd.read_csv(paths.trials_csv, dtype={"trial_id": str}).set_index("trial_id")
    assert all(paths.trial_checkpoint(t).is_file() for t in trials.index), "Keras Tuner's checkpoint name changed?"
    val = pd.read_csv(paths.operating_predictions)
    assert len(val) == 20 and list(val["index"]) == list(range(20))
    # the restored model is the trial's own: its validation log loss is the one the search recorded
    assert _log_loss(val["label"].to_numpy(), val["probability"].to_numpy()) == pytest.approx(
        trials.loc[best["trial_id"], "val_loss"], abs=1e-4)
    temperature = calibration.fit_temperature(val["label"], val["probability"])
    assert best["calibration"]["method"] == "temperature" and best["calibration"]["temperature"] == temperature
    scaled = calibration.apply_temperature(val["probability"].to_numpy(), temperature)
    expected = calibration.choose_threshold(val["label"], scaled, policy="sensitivity", target=0.95)
    threshold = best["threshold"]
    assert (threshold["policy"], threshold["target"], threshold["n_val"]) == ("sensitivity", 0.95, 20)
    assert threshold["value"] == expected.threshold and threshold["val_sensitivity"] >= 0.95
    assert f"trial {best['trial_id']}'s own model" in threshold["source"] and "checkpoint" in threshold["source"]


def _ledger(paths: StudyPaths) -> list[tuple[str, str]]:
    return [(e.get("dataset"), e.get("status")) for e in read_ledger(paths.ledger)]


def _external_copy(sample_data: Path, folder: Path, classes: tuple[str, ...] = ("covid", "normal")) -> Path:
    for source, name in zip(("covid", "normal"), classes):
        shutil.copytree(sample_data / "test" / source, folder / name)
    return folder


def test_evaluate_applies_the_threshold_and_temperature(study: tuple[Path, StudyPaths]) -> None:
    study_yaml, paths = study
    best = json.loads(paths.best_config.read_text())
    result = evaluate_study(study_yaml, n_boot=200)
    predictions = pd.read_csv(paths.predictions_csv("final"))
    assert result["threshold"] == best["threshold"]["value"] and result["threshold_info"] == best["threshold"]
    assert np.allclose(predictions["probability"], calibration.apply_temperature(
        predictions["probability_uncalibrated"].to_numpy(), best["calibration"]["temperature"]))
    positive = predictions["probability"] >= result["threshold"]
    assert result["metrics"]["tp"] == int((positive & (predictions["label"] == 1)).sum())
    half = predictions["probability"] >= 0.5
    assert result["metrics_at_0_5"]["tp"] == int((half & (predictions["label"] == 1)).sum())
    cal = result["calibration"]
    assert cal["brier"] == pytest.approx(calibration.brier_score(predictions["label"], predictions["probability"]))
    assert cal["before"]["ece"] == pytest.approx(calibration.expected_calibration_error(
        predictions["label"], predictions["probability_uncalibrated"]))
    assert cal["brier_ci95"][0] <= cal["brier"] <= cal["brier_ci95"][1] and "15 equal-width bins" in cal["binning"]
    assert json.loads(paths.metrics_json("final").read_text())["dataset"] == "test"
    assert (paths.evaluation_of("final") / "reliability.png").stat().st_size > 0


def _fails(argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


def test_external_set_is_leak_checked_evaluated_once_and_reported(
        study: tuple[Path, StudyPaths], sample_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_yaml, paths = study
    external = _external_copy(sample_data, tmp_path / "hospital")  # xray-sample's test split, renamed: it overlaps
    with pytest.warns(LeakWarning, match=r"20 image pair\(s\) are shared between the study's splits and the "
                                         r"external set 'hosp' \(20 byte-identical"):
        assert main(["evaluate", str(study_yaml), "--external", f"hosp={external}"]) == 0
    leaks = pd.read_csv(paths.external_leaks_csv("hosp"))
    assert len(leaks) == 20 and set(leaks["split_a"]) == {"test"} and set(leaks["split_b"]) == {"hosp"}
    result = json.loads(paths.metrics_json("final", "hosp").read_text())
    best = json.loads(paths.best_config.read_text())
    assert result["dataset"] == "hosp" and result["n_test"] == 20 and result["leaks_with_study"] == 20
    assert result["threshold"] == best["threshold"]["value"] and "calibration" in result
    internal = json.loads(paths.metrics_json("final").read_text())
    assert result["metrics"] == internal["metrics"], "the same images with the same model and threshold"
    assert _ledger(paths)[-2:] == [("hosp", "started"), ("hosp", "completed")]
    assert read_ledger(paths.ledger)[-1]["external_path"] == str(external)

    ledger, metrics = paths.ledger.read_bytes(), paths.metrics_json("final", "hosp").read_bytes()
    _fails(["evaluate", str(study_yaml), "--external", f"hosp={external}"], capsys,
           "already evaluated on the external set 'hosp'", "--force")
    renamed = _external_copy(sample_data, tmp_path / "renamed", classes=("covid", "healthy"))
    _fails(["evaluate", str(study_yaml), "--external", f"other={renamed}"], capsys,
           "class folders [covid, healthy]", "the study has [covid, normal]")
    _fails(["evaluate", str(study_yaml), "--external", f"test={external}"], capsys, "other than 'test'")
    with pytest.raises(SystemExit) as usage:
        main(["evaluate", str(study_yaml), "--external", str(external)])
    assert usage.value.code == 2 and "must look like NAME=PATH" in capsys.readouterr().err
    assert paths.ledger.read_bytes() == ledger and paths.metrics_json("final", "hosp").read_bytes() == metrics
    assert not paths.evaluation_of("final", "other").exists()

    forced = evaluate_external(study_yaml, sets={"hosp": external}, force=True, n_boot=100)["hosp"]
    assert forced["forced"] is True and _ledger(paths)[-2:] == [("hosp", "started"), ("hosp", "completed")]
    (paths.evaluation_of("final", "hosp") / "reliability.png").unlink()  # e.g. lost to a full disk
    ledger = paths.ledger.read_bytes()
    assert evaluate_external(study_yaml, sets={"hosp": external})["hosp"]["forced"] is True
    assert (paths.evaluation_of("final", "hosp") / "reliability.png").is_file() and paths.ledger.read_bytes() == ledger


def test_report_shows_the_operating_point_and_the_sets_side_by_side(study: tuple[Path, StudyPaths],
                                                                    tmp_path: Path) -> None:
    from hpstudy.report import write_report
    from hpstudy.report.operating_sections import CAVEAT

    study_yaml, _ = study
    text = write_report([study_yaml], out_dir=tmp_path / "report").markdown.read_text()
    assert CAVEAT in text and "Operating point: threshold" in text and "at 0.5" in text
    assert "after temperature scaling (T = " in text and "15 equal-width bins" in text
    table = text[text.index("Internal test and external sets side by side"):]
    rows: list[Any] = [line for line in table.splitlines() if line.startswith("| final |")]
    assert [row.split("|")[2].strip() for row in rows[:2]] == ["test", "hosp"]
    assert "hosp_roc.png" in text and "hosp_reliability.png" in text
