"""Shortcut probes: regions, mass fractions and verdicts on hand-made numbers; the study command end to end;
known answers on phantoms with and without a planted marker (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from hpstudy import probes as pr
from hpstudy.errors import EvaluationError
from hpstudy.paths import StudyPaths
from hpstudy.records import check_first_evaluation, evaluation_entries, ledger_entries

# --------------------------------------------------------------------------- regions and mass


def test_region_masks_on_a_10x10_grid() -> None:
    inner, band = pr.region_masks((10, 10), center=0.4, border=0.1)
    assert np.flatnonzero(inner.any(axis=1)).tolist() == [3, 4, 5, 6]  # centres 0.35..0.65 within 0.2 of 0.5
    assert np.flatnonzero(inner.any(axis=0)).tolist() == [3, 4, 5, 6] and inner.sum() == 16
    assert band.sum() == 100 - 64 and band[0].all() and band[:, 9].all() and not band[1:9, 1:9].any()
    assert not (inner & band).any()
    tall, _ = pr.region_masks((20, 10), center=0.4, border=0.1)
    assert tall.sum() == 8 * 4  # fractions of each side
    with pytest.raises(ValueError, match="holds no pixel"):
        pr.region_masks((4, 4), center=0.1, border=0.1)
    with pytest.raises(ValueError, match=r"fractions in \(0, 1\)"):
        pr.region_masks((4, 4), center=1.0, border=0.1)


def test_occlude_fills_the_region_with_each_images_mean_and_keeps_the_rest() -> None:
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 1)).astype("float32")
    region = np.zeros((4, 4), bool)
    region[1:3, 1:3] = True
    out = pr.occlude(images, region)
    for i in range(2):
        np.testing.assert_allclose(out[i][region], images[i].mean(), rtol=1e-6)
        np.testing.assert_array_equal(out[i][~region], images[i][~region])
    assert not np.shares_memory(out, images) and (images[0][region] != out[0][region]).all()


def test_mass_fractions_against_hand_computation() -> None:
    region = np.array([[True, False], [False, False]])
    maps = np.array([np.ones((2, 2)), [[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]], np.zeros((2, 2))])
    fractions = pr.mass_fractions(maps, region)
    np.testing.assert_allclose(fractions[:3], [0.25, 1.0, 0.25])
    assert np.isnan(fractions[3])  # an empty map has no mass
    per_image = np.array([region, ~region, region, region])
    np.testing.assert_allclose(pr.mass_fractions(maps, per_image)[:3], [0.25, 0.0, 0.25])
    big = pr.mass_fractions(np.ones((1, 2, 2)), np.pad(region, ((0, 2), (0, 2))))  # maps resized to 4x4
    np.testing.assert_allclose(big, [1 / 16])


# --------------------------------------------------------------------------- verdicts on fake scores

def _labels_and_scores(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    return y, y + rng.normal(0, 0.3, 60), rng.uniform(0, 1, 60)


def test_a_model_that_keeps_its_auc_without_the_centre_is_flagged() -> None:
    y, good, noise = _labels_and_scores()
    result = pr.occlusion_probe(y, {"unmasked": good, "center_masked": good + 0.01, "border_masked": noise},
                                n_boot=200)
    assert result["flagged"] is True and result["retained"] == pytest.approx(1.0)
    assert result["auc"]["border_masked"] == pytest.approx(roc_auc_score(y, noise))
    assert "relies largely on something outside the central region" in result["verdict"]
    assert f"{roc_auc_score(y, good):.3f} unmasked" in result["verdict"]
    low, high = result["ci95"]["drop_border"]
    assert low <= result["drop_border"] <= high and low > 0


def test_a_model_that_loses_its_auc_without_the_centre_is_not_flagged() -> None:
    y, good, noise = _labels_and_scores()
    result = pr.occlusion_probe(y, {"unmasked": good, "center_masked": noise, "border_masked": good}, n_boot=200)
    expected = (roc_auc_score(y, noise) - 0.5) / (roc_auc_score(y, good) - 0.5)
    assert result["flagged"] is False and result["retained"] == pytest.approx(expected)
    assert result["retained"] < pr.RETAINED_FLAG and "not flagged" in result["verdict"]


def test_hiding_the_border_costing_more_than_the_centre_is_flagged() -> None:
    y, good, noise = _labels_and_scores()
    partly = np.where(np.arange(60) % 3 == 0, good, noise)  # keeps about a third of the discrimination
    result = pr.occlusion_probe(y, {"unmasked": good, "center_masked": partly, "border_masked": noise}, n_boot=200)
    assert result["retained"] < pr.RETAINED_FLAG and result["drop_border"] > result["drop_center"]
    assert result["flagged"] is True and "hiding the border band costs more" in result["verdict"]


def test_a_model_without_discrimination_is_not_assessed() -> None:
    y, _, noise = _labels_and_scores()
    result = pr.occlusion_probe(y, {"unmasked": noise, "center_masked": noise, "border_masked": noise}, n_boot=50)
    assert roc_auc_score(y, noise) < pr.MIN_AUC and result["flagged"] is None and "not assessed" in result["verdict"]


GROUPS = {"tp": np.array([0, 1]), "tn": np.array([2]), "fp": np.array([3]), "fn": np.array([], int)}


def test_mass_probe_flags_border_mass_above_its_area_share() -> None:
    center = np.array([0.1, 0.2, 0.9, np.nan])
    border = np.array([0.6, 0.5, 0.0, np.nan])  # the FP map is empty
    result = pr.mass_probe(center, border, GROUPS, center_area=0.25, border_area=0.36)
    assert result["border"]["positive_evidence"] == {"n": 3, "empty": 1, "mean": pytest.approx(0.55)}
    assert result["border"]["tn"]["mean"] == 0.0 and result["center"]["fn"] == {"n": 0, "empty": 0, "mean": None}
    assert result["enrichment"]["border"] == pytest.approx(0.55 / 0.36) and result["flagged"] is True
    assert "put 55% of their mass in the border band (36% of the image, 1.5x its share)" in result["verdict"]
    calm = pr.mass_probe(center, np.array([0.1, 0.2, 0.9, np.nan]), GROUPS, center_area=0.25, border_area=0.36)
    assert calm["flagged"] is False and "not flagged" in calm["verdict"]
    none = pr.mass_probe(center, border, {**GROUPS, "tp": np.array([], int)}, center_area=0.25, border_area=0.36)
    assert none["flagged"] is None and "not assessed" in none["verdict"]


def test_lung_probe_compares_the_in_lung_mass_with_the_lung_area() -> None:
    missing = pr.lung_probe(np.full(4, np.nan), np.full(4, np.nan), GROUPS, found=0, n_test=4)
    assert missing["flagged"] is None and missing["verdict"].startswith("Lung masks: not run")
    fractions, areas = np.array([0.8, 0.6, 0.9, np.nan]), np.array([0.4, 0.4, 0.5, np.nan])
    result = pr.lung_probe(fractions, areas, GROUPS, found=3, n_test=4)
    assert result["flagged"] is False and result["area"] == pytest.approx(0.4)
    assert result["enrichment"] == pytest.approx(0.7 / 0.4) and "(3 of 4 test images)" in result["verdict"]
    outside = pr.lung_probe(np.array([0.1, 0.2, 0.9, np.nan]), areas, GROUPS, found=3, n_test=4)
    assert outside["flagged"] is True and "flagged (less than the lungs' share)" in outside["verdict"]


def test_overall_status() -> None:
    assert pr.overall([None, True, False]) is True and pr.overall([False, None]) is False
    assert pr.overall([None, None]) is None
    assert [pr.status_word(f) for f in (True, False, None)] == ["FLAGGED", "not flagged", "not assessed"]


# --------------------------------------------------------------------------- the study command, end to end

SPACE = {"family": "baseline_cnn", "hyperparameters": {
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True, "default": 3.0e-3},
    "base_filters": {"type": "choice", "values": [4], "default": 4},
    "n_blocks": {"type": "int", "low": 2, "high": 2, "default": 2},
    "dense_units": {"type": "choice", "values": [8], "default": 8},
    "batch_size": {"type": "choice", "values": [16], "default": 16}}}


def _phantom_study(tmp_path: Path) -> Path:
    from hpstudy.data.phantom import make_phantom

    data = make_phantom(tmp_path / "phantom", n_train=10, n_val=5, n_test=6, size=32, seed=2)
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    study = {"name": "pr", "data": str(data), "family": "baseline_cnn", "search_space": "space.yaml",
             "oracle": {"type": "random", "max_trials": 1, "epochs": 1}, "seed": 3, "image_size": [32, 32],
             "augmentation": False, "weights": "none", "probes": {"center": 0.7, "border": 0.1}}
    (folder / "pr.yaml").write_text(yaml.safe_dump(study))
    return folder / "pr.yaml"


def test_probe_runs_after_the_evaluation_only_and_is_no_use(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hpstudy.cli import main
    from hpstudy.evaluate import evaluate_study
    from hpstudy.explain import probe_study
    from hpstudy.finalize import finalize_study
    from hpstudy.study import run_study

    study_yaml = _phantom_study(tmp_path)
    paths = StudyPaths(study_yaml.parent / "pr")
    run_study(study_yaml)
    finalize_study(study_yaml)
    capsys.readouterr()
    assert main(["probe", str(study_yaml)]) == 1  # before the evaluation: refused, nothing read or recorded
    assert "has not completed its test evaluation" in capsys.readouterr().err and not paths.ledger.exists()
    with pytest.raises(EvaluationError, match=r"run `hpstudy evaluate .*pr\.yaml --model final` first"):
        probe_study(study_yaml)

    evaluate_study(study_yaml)
    assert main(["probe", str(study_yaml), "--set", "probes.border=0.15"]) == 0
    out = capsys.readouterr().out
    assert "Occlusion: test ROC AUC" in out and "Grad-CAM mass" in out and "Lung masks: not run" in out
    record = json.loads(paths.probes_json("final").read_text())
    assert record["kind"] == "probe" and record["n_test"] == 12 and record["regions"]["border"] == 0.15
    assert record["regions"]["center"] == 0.7 and record["flagged"] in (True, False, None)
    assert len(record["verdicts"]) == 3 and paths.probes_figure("final").stat().st_size > 0
    assert sum(record["groups"].values()) == 12
    statuses = [(e.get("kind"), e["status"]) for e in ledger_entries(paths)]
    assert statuses == [(None, "started"), (None, "completed"), ("probe", "started"), ("probe", "completed")]
    assert len(evaluation_entries(paths)) == 2
    sha = ledger_entries(paths)[0]["model_sha256"]
    assert len(check_first_evaluation(paths.ledger, sha, force=True)) == 2  # the evaluation's lines, not the probe's
    with pytest.raises(EvaluationError, match="already evaluated"):
        evaluate_study(study_yaml)  # the probe did not reset the single use


# --------------------------------------------------------------------------- known answers (phantoms)

def _train_gap_cnn(x: np.ndarray, y: np.ndarray, *, epochs: int) -> object:
    """A small CNN with global average pooling (Grad-CAM is then CAM), seeded."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = x_ = keras.Input(x.shape[1:])
    for i, filters in enumerate((8, 16, 32), start=1):
        x_ = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{i}_conv")(x_)
        x_ = layers.MaxPooling2D()(x_)
    logit = layers.Dense(1, name="logit")(layers.GlobalAveragePooling2D()(x_))
    model = keras.Model(inputs, layers.Activation("sigmoid", name="probability")(logit))
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def _probe_phantom(tmp_path: Path, *, marker: bool) -> dict:
    from hpstudy.data.discover import discover
    from hpstudy.data.phantom import make_phantom
    from hpstudy.data.pipeline import Normalizer, load_split

    root = make_phantom(tmp_path / f"marker-{marker}", n_train=40, n_val=2, n_test=20, size=48, seed=1,
                        marker=marker, lesion=0.3 if marker else 1.0)
    source = discover(root, verify=False)
    x, y = load_split(source.split("train"), image_size=(48, 48))
    x_test, y_test = load_split(source.split("test"), image_size=(48, 48))
    normalizer = Normalizer.fit("dataset", x)
    model = _train_gap_cnn(normalizer.apply(x), y, epochs=15)
    recorded = model.predict(normalizer.apply(x_test), verbose=0).reshape(-1)
    inputs = pr.ProbeInputs(x_test, y_test, recorded, normalizer)
    return pr.run_probes(model, inputs, center=0.7, border=0.1, n_boot=300)


@pytest.mark.slow
def test_a_model_trained_on_a_planted_marker_is_flagged_and_one_without_is_not(tmp_path: Path) -> None:
    marked = _probe_phantom(tmp_path, marker=True)
    assert marked["occlusion"]["auc"]["unmasked"] > 0.9  # it learned the task...
    assert marked["occlusion"]["flagged"] is True  # ...from outside the centre (the corner marker)
    assert marked["occlusion"]["auc"]["border_masked"] < marked["occlusion"]["auc"]["center_masked"]
    assert marked["gradcam_mass"]["flagged"] is True and marked["flagged"] is True

    plain = _probe_phantom(tmp_path, marker=False)
    assert plain["occlusion"]["auc"]["unmasked"] > 0.9
    assert plain["occlusion"]["flagged"] is False and plain["gradcam_mass"]["flagged"] is False
    assert plain["flagged"] is False and plain["lung_masks"]["flagged"] is None


def test_run_probes_reads_the_lung_masks_shipped_beside_the_test_images(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    from hpstudy.data.pipeline import Normalizer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inputs)
    logit = keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(conv))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, size=(6, 16, 16, 1)).astype("float32")
    y = np.array([0, 0, 0, 1, 1, 1])
    lung = np.zeros((32, 32, 1), np.uint8)
    lung[8:24, 4:28] = 255  # 16 x 24 of 32 x 32: 37.5 % of the image
    paths = []
    for i in range(6):
        image = tmp_path / "test" / ("covid" if y[i] else "normal") / "images" / f"{i}.png"
        paths.append(image)
        if i != 5:  # the last image has no mask
            mask = image.parent.parent / "masks" / image.name
            mask.parent.mkdir(parents=True, exist_ok=True)
            mask.write_bytes(bytes(tf.io.encode_png(lung).numpy()))
    raw = model.predict(x / 255.0, verbose=0).reshape(-1).astype("float64")
    recorded = 1 / (1 + np.exp(-np.log(raw / (1 - raw)) / 2.0))  # as evaluated after a temperature of 2
    probe_inputs = pr.ProbeInputs(x, y, recorded, Normalizer("fixed"), paths, tmp_path, float(np.median(recorded)),
                                  raw=raw)
    result = pr.run_probes(model, probe_inputs, center=0.5, border=0.1, n_boot=20)
    lungs = result["lung_masks"]
    assert lungs["found"] == 5 and lungs["n_test"] == 6 and "(5 of 6 test images)" in lungs["verdict"]
    assert lungs["lungs"]["all"]["n"] == 6 and lungs["lungs"]["all"]["empty"] >= 1  # no mask: no fraction
    if lungs["flagged"] is not None:
        assert lungs["area"] == pytest.approx(0.375)
    assert result["max_score_difference"] < 1e-5  # compared with the model's own outputs, not the calibrated ones
    assert sum(result["groups"][g] for g in ("tp", "fp")) == 3  # predicted positive at the median
    assert json.dumps(result, allow_nan=False)  # strict JSON: no NaN


def test_gradcam_and_probes_group_at_the_evaluations_operating_point() -> None:
    from hpstudy.explain import evaluation_threshold

    assert evaluation_threshold({"threshold": 0.5}) == 0.5, "an evaluation written before operating points"
    assert evaluation_threshold({"threshold": 0.31, "threshold_info": {"value": 0.31, "policy": "youden"}}) == 0.31
    assert evaluation_threshold({}) == 0.5
