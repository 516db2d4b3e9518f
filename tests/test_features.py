"""Tests of hpstudy.features: cache keys, reuse and invalidation, head/full equivalence, a cached study.

Everything runs at 32 px with ``weights: none`` (a seeded random ResNet50V2 saved in the cache).
"""

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
import yaml

from hpstudy import features as ft
from hpstudy.config import FeatureCacheConfig, parse_search_space, parse_study
from hpstudy.config.settings import Augmentation
from hpstudy.data.pipeline import Normalizer
from hpstudy.errors import ConfigError, StudyError
from hpstudy.models import build_head, copy_head_weights
from hpstudy.models.resnet import HEAD_STEPS_PER_EXECUTION, HeadOnFeatures

SHAPE = (32, 32, 1)
AUGMENT = Augmentation(rotation=10.0, shift=0.1, zoom=0.1)
HEAD_SPACE = {
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True, "default": 3.0e-3},
    "batch_size": {"type": "choice", "values": [16, 32], "default": 16},
    "n_dense": {"type": "int", "low": 0, "high": 1, "default": 1},
    "dense_units": {"type": "choice", "values": [8, 16], "default": 8},
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.random((6, *SHAPE), dtype=np.float32) * 255.0).astype(np.float32), np.array([0, 1] * 3, np.float32)


def _cache(cache_dir: Path, *, seed: int = 1, normalizer: Normalizer | None = None,
           augmentation: Augmentation = AUGMENT) -> ft.FeatureCache:
    return ft.FeatureCache(cache_dir=cache_dir, weights="none", seed=seed, input_shape=SHAPE,
                           normalizer=normalizer or Normalizer("fixed"), augmentation=augmentation)


# --------------------------------------------------------------------------- keys, reuse, invalidation
def test_the_key_changes_with_everything_the_features_depend_on() -> None:
    base = dict(backbone="resnet50v2", weights="imagenet", input_shape=(32, 32, 1),
                normalizer={"strategy": "fixed"}, augmentation=AUGMENT.to_dict(), seed=1, views=2,
                split="train", data="abc")
    changed = dict(backbone="other", weights="file:sha256:00", input_shape=(64, 64, 1),
                   normalizer={"strategy": "dataset", "mean": 1.0}, augmentation=Augmentation(rotation=5).to_dict(),
                   seed=2, views=3, split="val", data="abd")
    key = ft.feature_key(**base)
    for name, value in changed.items():
        assert ft.feature_key(**{**base, name: value}) != key, name
    clean = {**base, "views": 0}
    # the clean view uses neither the augmentation nor the seed: changing them keeps its features
    assert ft.feature_key(**{**clean, "seed": 9, "augmentation": None}) == ft.feature_key(**clean)


def test_features_are_reused_and_recomputed_when_a_key_changes(tmp_path: Path, images: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = images
    first = _cache(tmp_path).features(x, y, split="train", data="d1", views=2)
    assert first.computed and first.features.shape == (3, 6, 2048) and first.path.name.startswith("features-")
    assert not np.allclose(first.features[0], first.features[1])  # the augmented views differ from the clean one
    assert len(list(tmp_path.glob("backbone-*.weights.h5"))) == 1

    real_extract = ft.extract_features
    monkeypatch.setattr(ft, "extract_features", lambda *a, **k: pytest.fail("the backbone ran for cached features"))
    again = _cache(tmp_path)
    reused = again.features(x, y, split="train", data="d1", views=2)
    assert not reused.computed and again._extractor is None  # not even built
    np.testing.assert_array_equal(reused.features, first.features)

    calls: list[int] = []
    monkeypatch.setattr(ft, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    cache = _cache(tmp_path)
    assert cache.features(x, y, split="train", data="d2", views=2).computed  # other images
    assert cache.features(x, y, split="train", data="d1", views=1).computed  # fewer views
    shifted = _cache(tmp_path, normalizer=Normalizer("dataset", mean=100.0, std=50.0))
    assert shifted.features(x, y, split="train", data="d1", views=2).computed  # another normalizer
    assert len(calls) == 3
    first.path.write_bytes(b"truncated")  # an unreadable file is rebuilt, never trusted
    assert cache.features(x, y, split="train", data="d1", views=2).computed
    np.testing.assert_allclose(np.load(first.path)["features"], first.features, rtol=1e-5, atol=1e-6)


def test_a_new_seed_draws_a_new_random_backbone(tmp_path: Path, images: Any) -> None:
    x, y = images
    one = _cache(tmp_path, seed=1)
    two = _cache(tmp_path, seed=2)
    assert one.backbone.source != two.backbone.source and one.backbone.identity != two.backbone.identity
    assert one.path(split="val", data="d", views=0) != two.path(split="val", data="d", views=0)
    assert _cache(tmp_path, seed=1).backbone == one.backbone  # the saved backbone is reused, not redrawn


# --------------------------------------------------------------------------- head on features == full model
def _spread_logits(head: keras.Model, features: np.ndarray) -> None:
    """Random head weights scaled so that the probabilities spread over (0, 1) (a sensitive comparison)."""
    rng = np.random.default_rng(1)
    for layer in head.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, 1.0, w.shape).astype(np.float32) for w in layer.get_weights()])
    logit = head.get_layer("logit")
    values = keras.Model(head.inputs, logit.output).predict(features, verbose=0)
    kernel, bias = logit.get_weights()
    scale = 2.0 / max(float(values.std()), 1e-12)
    logit.set_weights([kernel * scale, (bias - values.mean()) * scale])


def test_full_model_predicts_what_the_head_predicts_on_cached_clean_features(tmp_path: Path, images: Any) -> None:
    x, y = images
    normalizer = Normalizer("dataset", mean=120.0, std=60.0)
    cache = _cache(tmp_path, normalizer=normalizer)
    found = cache.features(x, y, split="val", data="d", views=0)
    space = parse_search_space({"family": "resnet50v2_head", "hyperparameters": HEAD_SPACE}, source="t.yaml")
    hypermodel = HeadOnFeatures(space, input_shape=SHAPE, weights=cache.backbone.source, feature_dim=found.dim)
    hp = kt.HyperParameters()
    head = hypermodel.build(hp)
    assert head.input_shape == (None, found.dim)
    _spread_logits(head, found.features[0])
    full = hypermodel.build_full(hp)
    assert copy_head_weights(head, full) == ["head_dense1", "logit"]
    images_in = normalizer.apply(x)
    pooled = keras.Model(full.inputs, full.get_layer("pool").output).predict(images_in, verbose=0)
    np.testing.assert_allclose(pooled, found.features[0], rtol=1e-5, atol=1e-6)
    expected = head.predict(found.features[0], verbose=0)
    assert expected.std() > 0.05
    np.testing.assert_allclose(full.predict(images_in, verbose=0), expected, atol=1e-5)


# --------------------------------------------------------------------------- the training datasets
def test_each_batch_draws_one_view_per_image_seeded() -> None:
    views, n = 3, 10
    table = np.arange(views)[:, None, None] * 100.0 + np.arange(n)[None, :, None]  # value = 100 * view + image
    found = ft.FeatureSet(np.repeat(table, 4, axis=2).astype(np.float32), np.arange(n, dtype=np.float32))

    def epoch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        rows = list(dataset.as_numpy_iterator())
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    dataset = ft.feature_dataset(found, batch_size=4, training=True, seed=5)
    draws = []
    for _ in range(6):
        feats, labels = epoch(dataset)
        assert sorted(labels.tolist()) == list(range(n))  # every image once per epoch
        np.testing.assert_array_equal(feats[:, 0] % 100, labels)  # the features belong to the label's image
        draws.append(feats[:, 0] // 100)
    assert set(np.concatenate(draws).astype(int)) == {0, 1, 2}  # all views are drawn, clean included
    first_again = epoch(ft.feature_dataset(found, batch_size=4, training=True, seed=5))[0]
    assert first_again[:, 0].tolist() == (np.asarray(draws[0]) * 100 + epoch(
        ft.feature_dataset(found, batch_size=4, training=True, seed=5))[1]).tolist()
    np.testing.assert_array_equal(first_again, epoch(ft.feature_dataset(found, batch_size=4, training=True,
                                                                        seed=5))[0])
    feats, labels = epoch(ft.feature_dataset(found, batch_size=4, training=False))
    np.testing.assert_array_equal(labels, np.arange(n))
    np.testing.assert_array_equal(feats[:, 0], np.arange(n))  # validation: clean view, in order


# --------------------------------------------------------------------------- configuration
def _study(**extra: Any) -> dict[str, Any]:
    return {"name": "s", "family": "resnet50v2_head", "weights": "none", "normalization": "fixed",
            "search_space": {"family": "resnet50v2_head", "hyperparameters": HEAD_SPACE},
            "oracle": {"type": "random", "max_trials": 1, "epochs": 1}, **extra}


def test_feature_cache_configuration() -> None:
    config = parse_study(_study())
    assert config.feature_cache == FeatureCacheConfig(enabled=True, views=4)
    assert config.to_dict()["feature_cache"] == {"enabled": True, "views": 4}
    assert parse_study(_study(feature_cache=False)).feature_cache == FeatureCacheConfig(enabled=False)
    assert parse_study(_study(feature_cache={"views": 2}), overrides=["feature_cache.views=8"]).feature_cache.views == 8
    assert parse_study(_study(feature_cache=False), overrides=["feature_cache.views=2"]).feature_cache.enabled is False
    assert parse_study(_study(feature_cache={"views": 0}, augmentation=False)).feature_cache.views == 0
    cnn = parse_study({**_study(), "family": "baseline_cnn", "normalization": "dataset",
                       "search_space": {"family": "baseline_cnn", "hyperparameters": {}}})
    assert cnn.feature_cache is None and "feature_cache" not in cnn.to_dict()
    with pytest.raises(ConfigError, match=r"feature_cache: applies to family resnet50v2_head only"):
        parse_study({**_study(feature_cache={"views": 2}), "family": "baseline_cnn",
                     "search_space": {"family": "baseline_cnn", "hyperparameters": {}}})
    with pytest.raises(ConfigError, match=r"feature_cache.views: must be >= 1 while augmentation is on"):
        parse_study(_study(feature_cache={"views": 0}))
    with pytest.raises(ConfigError, match=r"feature_cache.views: must be <= 64"):
        parse_study(_study(feature_cache={"views": 65}))
    with pytest.raises(ConfigError, match=r"feature_cache.views: must be >= 0, but got -1"):
        parse_study(_study(feature_cache={"views": -1}))
    with pytest.raises(ConfigError, match=r"unknown key 'view'.*did you mean 'views'"):
        parse_study(_study(feature_cache={"view": 2}))
    with pytest.raises(ConfigError, match=r"feature_cache.enabled: must be true or false"):
        parse_study(_study(feature_cache={"enabled": "yes"}))


# --------------------------------------------------------------------------- a whole study
def test_cached_resnet_study_searches_finalizes_and_refuses_a_changed_cache(sample_data: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    from hpstudy.data.discover import resolve_source
    from hpstudy.data.prepare import prepare_data
    from hpstudy.finalize import finalize_study
    from hpstudy.study import run_study

    folder = tmp_path / "studies"
    folder.mkdir()
    study = {**_study(feature_cache={"views": 2}), "name": "rn", "data": str(sample_data), "seed": 3,
             "image_size": 32, "normalization": "dataset", "early_stopping": {"monitor": "val_auc", "patience": 1},
             "oracle": {"type": "random", "max_trials": 2, "epochs": 2},
             "augmentation": {"rotation": 5, "shift": 0.05, "zoom": 0.05}}
    path = folder / "rn.yaml"
    path.write_text(yaml.safe_dump(study))

    outcome = run_study(path)
    assert outcome.trials_run == 2 and outcome.best is not None
    out = capsys.readouterr().out
    assert "features of train (80 images x 3 view(s)): computed" in out
    assert "features of val (20 images x 1 view(s)): computed" in out
    frozen = yaml.safe_load((folder / "rn" / "study.yaml").read_text())
    assert frozen["config"]["feature_cache"] == {"enabled": True, "views": 2}

    result = finalize_study(path, finetune=False, overrides=["threshold=youden"])
    assert result.model_path.is_file() and result.model_path == folder / "rn" / "final" / "model.keras"
    out = capsys.readouterr().out
    assert "features of train (80 images x 3 view(s)): read" in out  # the search's features are reused
    assert "features of val (20 images x 3 view(s)): computed" in out  # val views join the training data

    # the threshold is chosen on the best trial's head restored from its checkpoint, on the cached val features
    import pandas as pd

    best = yaml.safe_load((folder / "rn" / "final" / "best_config.json").read_text())
    assert best["threshold"]["policy"] == "youden" and "restored from its checkpoint" in best["threshold"]["source"]
    chosen_on = pd.read_csv(folder / "rn" / "final" / "validation_predictions.csv")
    p = np.clip(chosen_on["probability"].to_numpy(), 1e-7, 1 - 1e-7)
    y = chosen_on["label"].to_numpy()
    val_loss = pd.read_csv(folder / "rn" / "trials.csv", dtype={"trial_id": str}).set_index("trial_id").loc[
        best["trial_id"], "val_loss"]
    assert -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) == pytest.approx(val_loss, abs=1e-4)

    # the saved full model predicts, on each validation image, what its head predicts on the cached feature
    model = keras.models.load_model(result.model_path)
    head = build_head(result.hyperparameters, feature_dim=2048)
    copy_head_weights(model, head)
    prepared = prepare_data(resolve_source(sample_data), image_size=(32, 32), normalization="dataset",
                            leak_check="off", cache_dir=folder / "rn" / "cache")
    val = next(np.load(p) for p in (folder / "rn" / "cache").glob("features-*.npz")
               if np.load(p)["features"].shape[:2] == (1, 20))
    np.testing.assert_allclose(model.predict(prepared.normalizer.apply(prepared.x_val), verbose=0),
                               head.predict(val["features"][0], verbose=0), atol=1e-5)

    with pytest.raises(StudyError, match=r"feature_cache.views: 2 -> 3"):
        run_study(path, overrides=["feature_cache.views=3"])


def test_jit_compile_and_mixed_precision_settings_reach_keras(capsys: pytest.CaptureFixture) -> None:
    from hpstudy.models import build_hypermodel
    from hpstudy.runtime import configure_devices

    space = parse_search_space({"family": "resnet50v2_head", "hyperparameters": HEAD_SPACE}, source="t.yaml")
    head = HeadOnFeatures(space, input_shape=SHAPE, weights="imagenet", jit_compile=True).build(kt.HyperParameters())
    assert head.jit_compile is True and head.steps_per_execution == HEAD_STEPS_PER_EXECUTION
    cnn_space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {}}, source="t.yaml")
    cnn = build_hypermodel("baseline_cnn", cnn_space, input_shape=SHAPE, jit_compile=True).build(kt.HyperParameters())
    assert cnn.jit_compile is True and cnn.steps_per_execution == 1
    keras.mixed_precision.set_global_policy("mixed_float16")  # e.g. left over from an earlier study
    try:
        assert configure_devices(mixed_precision=True) == []  # no GPU here: a note, and float32
        assert "no GPU is visible" in capsys.readouterr().out
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_head_starts_from_the_same_weights_with_or_without_the_backbone(tmp_path: Path) -> None:
    space = parse_search_space({"family": "resnet50v2_head", "hyperparameters": HEAD_SPACE}, source="t.yaml")
    hypermodel = HeadOnFeatures(space, input_shape=SHAPE, weights="none")
    keras.utils.set_random_seed(11)
    full = hypermodel.build_full(kt.HyperParameters())
    keras.utils.set_random_seed(11)
    head = hypermodel.build(kt.HyperParameters())
    for name in ("head_dense1", "logit"):
        for a, b in zip(full.get_layer(name).get_weights(), head.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
