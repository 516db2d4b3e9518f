"""Fine-tuning: unfreeze policies, drop detection and the learning-rate back-off (ResNet50V2, 32 px)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from hpstudy.config import parse_study
from hpstudy.data.pipeline import Normalizer
from hpstudy.data.prepare import PreparedData
from hpstudy.errors import StudyError
from hpstudy.finetune import DropDetector, finetune_model, unfreeze
from hpstudy.models import build_hypermodel, hyperparameters_object
from hpstudy.paths import StudyPaths

HEAD_SPACE = {"family": "resnet50v2_head", "hyperparameters": {
    "dense_units": {"type": "choice", "values": [8]},
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-3},
    "batch_size": {"type": "choice", "values": [8]},
}}


def _config(tmp_path: Path, **finetune) -> object:
    study = {"name": "ft", "family": "resnet50v2_head", "search_space": HEAD_SPACE, "weights": "none",
             "image_size": [32, 32], "normalization": "fixed", "augmentation": False,
             "oracle": {"type": "random", "max_trials": 1, "epochs": 1},
             "finetune": {"unfreeze": "top_blocks", "top_blocks": 1, "epochs": 1, "max_retries": 1,
                          "learning_rate": 1.0e-4, **finetune}}
    return parse_study(study, source=tmp_path / "ft.yaml")


def _head_model(config) -> keras.Model:
    keras.utils.set_random_seed(0)
    space = config.search_space
    return build_hypermodel("resnet50v2_head", space, input_shape=(32, 32, 1), weights=None).build(
        hyperparameters_object(space, space.defaults()))


@pytest.fixture
def study(tmp_path: Path):
    """A saved head model with its training history, as `finalize` leaves it."""
    config = _config(tmp_path)
    paths = StudyPaths(config.study_dir)
    paths.final_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(16, 32, 32, 1)).astype("float32")
    y = np.array([0, 1] * 8, dtype="float32")
    normalizer = Normalizer.fit("fixed", x)
    model = _head_model(config)
    model.save(paths.final_dir / "model.keras")
    prepared = PreparedData(None, x, y, x[:2], y[:2], normalizer, (32, 32))
    return config, paths, prepared, x, y, model


def _write_reference(paths: StudyPaths, loss: float, accuracy: float) -> None:
    pd.DataFrame({"epoch": [1], "loss": [loss], "accuracy": [accuracy]}).to_csv(
        paths.final_dir / "history.csv", index=False)


def test_drop_detector_flags_a_loss_jump_and_an_accuracy_fall() -> None:
    detector = DropDetector(reference_loss=0.5, reference_accuracy=0.8, margin=0.1)
    detector.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    detector.on_epoch_end(0, {"loss": 0.52, "accuracy": 0.79})  # within the margin
    assert detector.dropped_at is None
    detector.on_epoch_end(1, {"loss": 0.60, "accuracy": 0.85})
    assert detector.dropped_at == 2 and "training loss" in detector.reason
    falling = DropDetector(reference_loss=0.5, reference_accuracy=0.8, margin=0.1)
    falling.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    falling.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.65})
    assert falling.dropped_at == 1 and "accuracy" in falling.reason


def test_unfreeze_policies_keep_batchnorm_frozen(study) -> None:
    config, _, _, _, _, model = study
    backbone = model.get_layer("resnet50v2")
    assert not any(w.trainable for w in backbone.weights)
    everything = unfreeze(model, policy="all")
    assert all(not layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    top = unfreeze(model, policy="top_blocks", top_blocks=1)
    assert top and all(name.startswith(("conv5_block3", "post")) for name in top)
    assert len(top) < len(everything)
    assert unfreeze(model, policy="from_layer", from_layer="conv5_block3_3_conv") == ["conv5_block3_3_conv"]
    with pytest.raises(StudyError, match="from_layer 'nope' is not a layer"):
        unfreeze(model, policy="from_layer", from_layer="nope")
    with pytest.raises(StudyError, match=r"top_blocks must be in \[1, 16\]"):
        unfreeze(model, policy="top_blocks", top_blocks=99)


def test_forced_drop_backs_off_and_keeps_the_head_model(study) -> None:
    config, paths, prepared, x, y, _ = study
    _write_reference(paths, loss=1e-6, accuracy=1.0)  # every real training loss is a "sudden drop"
    record = finetune_model(config, paths, prepared, x, y, {"batch_size": 8, "optimizer": "adam"})
    rates = [a["learning_rate"] for a in record["attempts"]]
    assert rates == pytest.approx([1e-4, 1e-5]), "learning rate divided by 10 on each retry (max_retries=1)"
    assert all(a["dropped"] and a["dropped_at_epoch"] == 1 for a in record["attempts"])
    assert record["kept"] == "head"
    assert not (paths.finetune_dir / "model.keras").exists()
    saved = json.loads((paths.finetune_dir / "lr_backoff.json").read_text())
    assert saved["kept"] == "head" and len(saved["attempts"]) == 2


def test_an_improving_attempt_is_saved_and_reloads(study) -> None:
    config, paths, prepared, x, y, _ = study
    _write_reference(paths, loss=50.0, accuracy=0.0)  # any sane training beats this reference
    record = finetune_model(config, paths, prepared, x, y, {"batch_size": 8, "optimizer": "adam"})
    assert record["kept"] == "finetuned" and len(record["attempts"]) == 1
    model = keras.models.load_model(paths.finetune_dir / "model.keras")
    assert any(w.trainable for w in model.get_layer("resnet50v2").weights)
    assert (paths.finetune_dir / "history.csv").exists() and (paths.finetune_dir / "curves.png").exists()
