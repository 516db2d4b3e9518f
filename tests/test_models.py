"""Tests of hpstudy.models on tiny models (32x32 px, weights=None, one-epoch fits)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

from hpstudy import models as hm
from hpstudy.config import parse_search_space
from hpstudy.errors import ConfigError

SHAPE = (32, 32, 1)
TINY_CNN = {
    "n_blocks": {"type": "int", "low": 1, "high": 2, "default": 2},
    "base_filters": {"type": "choice", "values": [4, 8], "default": 4},
    "dense_units": {"type": "choice", "values": [8, 16], "default": 8},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.2},
    "batch_size": {"type": "choice", "values": [4, 8], "default": 4},
    "optimizer": {"type": "choice", "values": list(hm.OPTIMIZERS), "default": "adam"},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3},
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def _space(family: str, **hyperparameters: Any) -> Any:
    return parse_search_space({"family": family, "hyperparameters": hyperparameters}, source="test.yaml")


def _hp(hypermodel: kt.HyperModel, **values: Any) -> kt.HyperParameters:
    """A HyperParameters holding the whole space at its defaults, then ``values`` (as an oracle would)."""
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(values)
    return hp


def _cnn(**overrides: Any) -> hm.BaselineCNN:
    return hm.BaselineCNN(_space("baseline_cnn", **{**TINY_CNN, **overrides}), input_shape=SHAPE)


def _resnet(weights: Any = None, shape: tuple[int, int, int] = SHAPE, **space: Any) -> hm.ResNet50V2Head:
    return hm.ResNet50V2Head(_space("resnet50v2_head", **space), input_shape=shape, weights=weights)


def _arrays(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, *SHAPE), dtype=np.float32), np.tile([0.0, 1.0], n // 2).astype(np.float32)


def _recording_factory(requested: list[int], n: int = 16) -> hm.DatasetFactory:
    x, y = _arrays(n)

    def make(batch_size: int) -> tf.data.Dataset:
        requested.append(batch_size)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

    return hm.DatasetFactory(make)


class _BatchSizes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1


def test_baseline_defaults_follow_the_output_convention() -> None:
    model = _cnn().build(kt.HyperParameters())
    assert model.output_shape == (None, 1)
    assert model.layers[-1].name == "probability"
    assert model.layers[-1].dtype_policy.name == "float32"
    assert model.get_layer("logit").units == 1
    assert model.get_layer("block2_relu") is not None  # n_blocks default 2: the Grad-CAM layer
    assert model.loss.get_config()["from_logits"] is False


def test_baseline_architecture_follows_hyperparameters() -> None:
    hypermodel = _cnn()
    small = hypermodel.build(_hp(hypermodel, base_filters=4)).count_params()
    large = hypermodel.build(_hp(hypermodel, base_filters=8)).count_params()
    assert large > small
    model = hm.BaselineCNN(_space("baseline_cnn", pooling={"type": "choice", "values": ["flatten"]},
                                  conv_dropout={"type": "float", "low": 0.1, "high": 0.1},
                                  l2={"type": "float", "low": 1e-3, "high": 1e-3},
                                  use_batchnorm={"type": "bool", "default": False}),
                           input_shape=SHAPE).build(kt.HyperParameters())
    names = [layer.name for layer in model.layers]
    assert "flatten" in names and "block1_dropout" in names and "block1_bn" not in names
    assert model.get_layer("block1_conv").kernel_regularizer is not None


def test_resnet_head_defaults_freeze_the_backbone() -> None:
    model = _resnet(dropout={"type": "float", "low": 0.1, "high": 0.5}).build(kt.HyperParameters())
    assert model.output_shape == (None, 1)
    assert model.layers[-1].name == "probability"
    assert model.get_layer("logit").units == 1
    backbone = model.get_layer(hm.BACKBONE_NAME)
    assert not backbone.trainable and backbone.input_shape == (None, 32, 32, 3)
    assert model.get_layer("to_rgb") is not None
    head = {w.path.split("/")[0] for w in model.trainable_weights}
    assert head == {"head_dense1", "logit"}
    node = next(layer for layer in model.get_config()["layers"] if layer["name"] == hm.BACKBONE_NAME)
    assert node["inbound_nodes"][0]["kwargs"]["training"] is False  # BatchNorm stays in inference mode


def test_head_model_shares_layer_names_with_the_full_model() -> None:
    hypermodel = _resnet(n_dense={"type": "int", "low": 2, "high": 2}, dense_units={"type": "int", "low": 8, "high": 8})
    hp = kt.HyperParameters()
    full = hypermodel.build(hp)
    head = hypermodel.build_head_model(hp)
    assert head.input_shape == (None, 2048) and head.optimizer is not None
    assert hm.copy_head_weights(head, full) == ["head_dense1", "head_dense2", "logit"]
    for name in ("head_dense1", "head_dense2", "logit"):
        for a, b in zip(head.get_layer(name).get_weights(), full.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert hm.build_head(hp.values, feature_dim=16).output_shape == (None, 1)


def test_only_declared_hyperparameters_are_registered() -> None:
    space = _space("baseline_cnn", learning_rate={"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                   dense_units={"type": "choice", "values": [8, 16]})
    hp = kt.HyperParameters()
    hm.BaselineCNN(space, input_shape=SHAPE).build(hp)
    assert set(hp.values) == {"learning_rate", "dense_units"}
    declared = kt.HyperParameters()
    _cnn().declare_hyperparameters(declared)
    assert set(declared.values) == set(TINY_CNN)  # batch_size known before the first trial


@pytest.mark.parametrize("name", hm.OPTIMIZERS)
def test_every_optimizer_builds(name: str) -> None:
    hypermodel = _cnn()
    model = hypermodel.build(_hp(hypermodel, optimizer=name, learning_rate=0.01))
    assert type(model.optimizer).__name__.lower() == name
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_optimizer_settings_and_unknown_names() -> None:
    assert hm.make_optimizer("sgd", 0.1, momentum=0.5).momentum == 0.5
    assert hm.make_optimizer("adamw", 0.1, weight_decay=0.02).weight_decay == 0.02
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'; valid optimizers: adam, sgd, rmsprop, adamw"):
        hm.make_optimizer("lion", 1e-3)
    with pytest.raises(ConfigError, match="unknown model family 'vit'; valid families: baseline_cnn, resnet50v2_head"):
        hm.build_hypermodel("vit", _space("baseline_cnn"), input_shape=SHAPE)
    with pytest.raises(ConfigError, match="is for family 'baseline_cnn', not 'resnet50v2_head'"):
        hm.build_hypermodel("resnet50v2_head", _space("baseline_cnn"), input_shape=SHAPE, weights=None)


def test_metrics_are_fresh_and_named_for_the_history() -> None:
    first, second = hm.classification_metrics(), hm.classification_metrics()
    assert [m.name for m in first] == ["accuracy", "auc", "precision", "recall"]
    assert all(a is not b for a, b in zip(first, second))


def test_each_build_is_a_fresh_model_seeded_by_the_caller() -> None:
    hypermodel = _cnn()
    hp = kt.HyperParameters()
    a, b = hypermodel.build(hp), hypermodel.build(hp)
    assert not np.array_equal(a.get_layer("block1_conv").kernel, b.get_layer("block1_conv").kernel)
    keras.utils.set_random_seed(7)
    c = hypermodel.build(hp)
    keras.utils.set_random_seed(7)
    d = hypermodel.build(hp)
    for wc, wd in zip(c.get_weights(), d.get_weights()):
        np.testing.assert_array_equal(wc, wd)


def test_fit_calls_the_factory_with_the_tuned_batch_size() -> None:
    hypermodel = _cnn()
    hp = _hp(hypermodel, batch_size=8)
    requested: list[int] = []
    counter = _BatchSizes()
    history = hypermodel.fit(hp, hypermodel.build(hp), _recording_factory(requested),
                             validation_data=_recording_factory(requested), batch_size=999, epochs=1,
                             callbacks=[counter], verbose=0)
    assert requested == [8, 8] and counter.steps == 2  # 16 images / 8
    assert {"val_auc", "val_accuracy", "val_precision", "val_recall", "val_loss"} <= set(history.history)


def test_fit_passes_the_tuned_batch_size_with_arrays_and_refuses_fixed_batches() -> None:
    hypermodel = _cnn()
    hp = _hp(hypermodel, batch_size=4)
    x, y = _arrays()
    counter = _BatchSizes()
    hypermodel.fit(hp, hypermodel.build(hp), x, y, epochs=1, callbacks=[counter], verbose=0)
    assert counter.steps == 4
    with pytest.raises(TypeError, match="wrap its construction in hpstudy.models.DatasetFactory"):
        hypermodel.fit(hp, hypermodel.build(hp), tf.data.Dataset.from_tensor_slices((x, y)).batch(2), epochs=1)


def test_missing_or_wrong_weights_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet.weights.h5"
    with pytest.raises(ConfigError, match=f"weights file not found: {missing}"):
        hm.build_hypermodel("resnet50v2_head", _space("resnet50v2_head"), input_shape=SHAPE, weights=str(missing))
    with pytest.raises(ConfigError, match="weights must be 'imagenet', none or a weights file"):
        hm.build_resnet_backbone(SHAPE, tmp_path / "resnet.bin")
    with pytest.raises(ConfigError, match="at least 32x32 pixels"):
        hm.build_resnet_backbone((16, 16, 1), None)


def test_unavailable_imagenet_weights_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**kwargs: Any) -> None:
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(keras.applications, "ResNet50V2", offline)
    with pytest.raises(ConfigError, match="download resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        hm.build_resnet_backbone(SHAPE, "imagenet")


def test_a_local_weights_file_is_loaded_into_the_backbone(tmp_path: Path) -> None:
    path = tmp_path / "resnet50v2_notop.weights.h5"
    saved = hm.build_resnet_backbone(SHAPE, None)
    saved.save_weights(path)
    hypermodel = hm.build_hypermodel("resnet50v2_head", _space("resnet50v2_head"), input_shape=(32, 32, 3),
                                     weights=str(path))
    backbone = hypermodel.build(kt.HyperParameters()).get_layer(hm.BACKBONE_NAME)
    for expected, loaded in zip(saved.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(expected, loaded)


class _RandomSearch(kt.RandomSearch):
    """Keras Tuner imports tensorboard in every trial; TensorFlow >= 2.20 no longer installs it."""

    def _configure_tensorboard_dir(self, callbacks: list[Any], trial: Any, execution: int = 0) -> None:
        pass


def test_random_search_tunes_batch_size_and_finds_val_auc(tmp_path: Path) -> None:
    requested: list[int] = []
    tuner = _RandomSearch(_cnn(), objective=kt.Objective("val_auc", "max"), max_trials=2, seed=1,
                            directory=str(tmp_path), project_name="tiny")
    tuner.search(_recording_factory(requested), validation_data=_recording_factory(requested), epochs=1, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    assert all(t.status == "COMPLETED" and t.score is not None for t in trials)
    assert all(t.metrics.exists("val_auc") for t in trials)
    tuned = [t.hyperparameters.get("batch_size") for t in sorted(trials, key=lambda t: t.trial_id)]
    assert requested == [b for b in tuned for _ in range(2)]
