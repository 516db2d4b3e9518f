"""Finalize, single test evaluation and Grad-CAM on a real (tiny) study of the sample X-rays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpstudy.errors import EvaluationError, StudyError
from hpstudy.evaluate import evaluate_study, model_path
from hpstudy.explain import gradcam_study
from hpstudy.finalize import final_epochs, finalize_study
from hpstudy.paths import StudyPaths
from hpstudy.records import read_ledger
from hpstudy.study import run_study
from tests.test_study import corrupt_test_split, write_study


def test_final_epochs_keeps_or_scales_the_best_epoch() -> None:
    assert final_epochs(7, n_train=1600, n_train_val=2000, scale=False) == 7
    assert final_epochs(7, n_train=1600, n_train_val=2000, scale=True) == 9  # 7 * 1.25 = 8.75
    with pytest.raises(StudyError, match="at least 1"):
        final_epochs(0, n_train=1, n_train_val=2, scale=False)


def test_finalize_before_search_is_refused(sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "nosearch", sample_data, {"type": "random", "max_trials": 1,
                                                                             "epochs": 1})
    with pytest.raises(StudyError, match="has not been searched yet .*study.yaml is missing.*run `hpstudy search"):
        finalize_study(study_yaml)
    with pytest.raises(StudyError, match="has not been searched yet"):
        evaluate_study(study_yaml)


def test_search_finalize_evaluate_once_and_gradcam(sample_data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    data = corrupt_test_split(sample_data, tmp_path)  # the test split is unreadable until evaluation
    study_yaml = write_study(tmp_path / "studies", "fin", data, {"type": "random", "max_trials": 2, "epochs": 3})
    run_study(study_yaml)
    outcome = finalize_study(study_yaml)
    paths = StudyPaths(tmp_path / "studies" / "fin")

    best = json.loads((paths.final_dir / "best_config.json").read_text())
    trials = pd.read_csv(paths.trials_csv, dtype={"trial_id": str})
    best_row = trials.sort_values("score", ascending=False).iloc[0]
    assert best["trial_id"] == best_row["trial_id"] and best["epochs"] == best_row["best_epoch"] == outcome.epochs
    history = pd.read_csv(paths.final_dir / "history.csv")
    assert len(history) == outcome.epochs and "val_loss" not in history.columns, "final fit must not validate"
    assert best["train_val_images"] == 100 and best["normalizer_fitted_on"] == "train"
    assert (paths.final_dir / "curves.png").stat().st_size > 0
    assert "no early stopping" in capsys.readouterr().out

    with pytest.raises(Exception, match="not a PNG|not an image|decode|corrupt"):
        evaluate_study(study_yaml)  # the evaluation is the first read of the (still broken) test split
    assert read_ledger(paths.evaluation_dir / "test_ledger.jsonl") == []

    for image in sorted((sample_data / "test").glob("*/*.png")):  # restore the real test images
        shutil.copyfile(image, data / "test" / image.parent.name / image.name)
    result = evaluate_study(study_yaml, n_boot=200)
    metrics = json.loads((paths.evaluation_dir / "final" / "metrics.json").read_text())
    assert metrics["n_test"] == 20 and 0.0 <= metrics["metrics"]["roc_auc"] <= 1.0
    low, high = metrics["ci95"]["accuracy"]
    assert low <= metrics["metrics"]["accuracy"] <= high
    for figure in ("confusion_matrix.png", "roc.png", "samples.png"):
        assert (paths.evaluation_dir / "final" / figure).stat().st_size > 0
    assert result["forced"] is False

    with pytest.raises(EvaluationError, match="already evaluated .*--force"):
        evaluate_study(study_yaml)
    forced = evaluate_study(study_yaml, force=True, n_boot=200)
    ledger = read_ledger(paths.evaluation_dir / "test_ledger.jsonl")
    assert [(e["status"], e["forced"]) for e in ledger] == [("started", False), ("completed", False),
                                                            ("started", True), ("completed", True)]
    assert forced["forced"] is True and ledger[1]["model_sha256"] == best["model_sha256"]

    figures = gradcam_study(study_yaml, per_group=2)
    predictions = pd.read_csv(paths.evaluation_dir / "final" / "predictions.csv")
    predicted = predictions["probability"] >= 0.5
    expected = {"tp": (predicted & (predictions.label == 1)).any(), "tn": (~predicted & (predictions.label == 0)).any(),
                "fp": (predicted & (predictions.label == 0)).any(), "fn": (~predicted & (predictions.label == 1)).any()}
    assert set(figures) == {group for group, present in expected.items() if present}
    assert all(path.stat().st_size > 0 for path in figures.values())


def test_model_file_from_another_study_is_refused(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    paths.final_dir.mkdir(parents=True)
    (paths.final_dir / "model.keras").write_bytes(b"a model of another study")
    (paths.final_dir / "best_config.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    with pytest.raises(StudyError, match="not the model this study saved"):
        model_path(paths, "final")
    with pytest.raises(StudyError, match="--model must be one of final, finetune"):
        model_path(paths, "best")


def test_trained_cnn_points_at_phantom_lesions(tmp_path: Path) -> None:
    """Known answer: on the phantom the lesion is the only signal, so Grad-CAM should point at it."""
    import keras

    from hpstudy.config import parse_search_space
    from hpstudy.data.discover import discover
    from hpstudy.data.phantom import lesion_boxes, make_phantom
    from hpstudy.data.pipeline import Normalizer, load_split, make_dataset
    from hpstudy.gradcam import heatmap, pointing_game
    from hpstudy.models import build_hypermodel, hyperparameters_object

    keras.utils.set_random_seed(0)
    root = make_phantom(tmp_path / "phantom", n_train=100, n_val=10, n_test=30, size=48, seed=1)
    source = discover(root)
    x, y = load_split(source.split("train"), image_size=(48, 48))
    x_test, y_test = load_split(source.split("test"), image_size=(48, 48))
    normalizer = Normalizer.fit("dataset", x)
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        "n_blocks": {"type": "int", "low": 3, "high": 3}, "base_filters": {"type": "choice", "values": [16]},
        "learning_rate": {"type": "float", "low": 3.0e-3, "high": 3.0e-3}}})
    model = build_hypermodel("baseline_cnn", space, input_shape=(48, 48, 1)).build(
        hyperparameters_object(space, space.defaults()))
    model.fit(make_dataset(x, y, batch_size=16, normalizer=normalizer, training=True, seed=0), epochs=8, verbose=0)

    probs = model.predict(normalizer.apply(x_test), verbose=0).reshape(-1)
    hits = np.flatnonzero((y_test == 1) & (probs >= 0.5))
    assert len(hits) >= 20, f"the CNN should learn the phantom: only {len(hits)} of 30 positives found"
    maps = heatmap(model, normalizer.apply(x_test[hits]))
    boxes_by_path = lesion_boxes(root)
    records = source.split("test")
    boxes = [boxes_by_path[str(records[i].path.relative_to(root))] for i in hits]
    rate = float(np.mean(pointing_game(maps, boxes, size=(48, 48))))
    print(f"pointing-game rate on phantom lesions: {rate:.2f} ({len(hits)} correctly classified positives)")
    assert rate >= 0.7
