"""Frozen-backbone feature cache for the ``resnet50v2_head`` family.

A frozen ResNet50V2 (BatchNormalization in inference mode) maps an image to the same pooled features
in every epoch of every trial, yet the usual Keras Tuner recipe runs the backbone again each time: on
a CPU that is nearly all of a head search. Here the backbone runs once per image and *view* — the
clean image (view 0) and ``views`` augmented copies of each training image — and the head-only model
(``ResNet50V2Head.build_head_model``, same hyperparameters) trains on the stored features; each epoch
draws one view per training image (one ``gather`` per batch, seeded). Validation uses the clean view.

The features are stored as ``<study>/cache/features-<key>.npz`` (written atomically). The key is a
hash of everything they depend on: backbone name, weights identity (``imagenet``, the SHA-256 of a
local weights file, or for ``weights: none`` the seed and the SHA-256 of the saved random backbone),
image shape, normalizer, augmentation, seed, number of views, split and data fingerprint. Change any
of them and the features are recomputed; keep them and the backbone is not even built.

With ``weights: none`` the random backbone is drawn once from the seed and saved as
``cache/backbone-<key>.weights.h5``; the features and the finalizer's full model are both built from
that file, so the transplanted head sits on exactly the backbone it was trained on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from hpstudy._io import atomic_path, digest, file_sha256
from hpstudy.config import Augmentation
from hpstudy.data.pipeline import Normalizer, make_augmenter
from hpstudy.errors import ConfigError
from hpstudy.models import BACKBONE_NAME, build_resnet_backbone, head_on_features

if TYPE_CHECKING:
    from hpstudy.config import StudyConfig
    from hpstudy.data.prepare import PreparedData

__all__ = ["CACHE_VERSION", "BackboneWeights", "FeatureSet", "FeatureCache", "backbone_weights", "feature_key",
           "extract_features", "feature_dataset", "uses_feature_cache", "feature_views", "study_feature_cache",
           "split_features"]

log = logging.getLogger("hpstudy")

CACHE_VERSION = 1
EXTRACT_BATCH = 32  # part of the key: augmented views are seeded per extraction batch
_VIEW_STRIDE = 1_000_003  # separates the augmentation seeds of different views


# --------------------------------------------------------------------------- backbone weights
@dataclass(frozen=True)
class BackboneWeights:
    """Which backbone the features come from.

    Attributes:
        source: what ``build_resnet_backbone`` loads: ``"imagenet"`` or a weights file.
        identity: ``"imagenet"``, ``"file:sha256:<hex>"`` or ``"random:seed=<s>:sha256:<hex>"``.
    """

    source: str
    identity: str


def backbone_weights(weights: str | Path | None, *, seed: int, cache_dir: Path) -> BackboneWeights:
    """The study's backbone weights and their identity; ``none`` draws and saves a seeded random backbone.

    Raises:
        ConfigError: a weights file that does not exist.
    """
    if weights is not None and str(weights).lower() == "imagenet":
        return BackboneWeights("imagenet", "imagenet")
    if weights is not None and str(weights).lower() != "none":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights file not found: {path}")
        return BackboneWeights(str(path), f"file:sha256:{file_sha256(path)}")
    path = Path(cache_dir) / f"backbone-{digest({'backbone': BACKBONE_NAME, 'seed': int(seed)})}.weights.h5"
    if not path.is_file():
        _save_random_backbone(path, seed)
    return BackboneWeights(str(path), f"random:seed={int(seed)}:sha256:{file_sha256(path)}")


def _save_random_backbone(path: Path, seed: int) -> None:
    """Draw the random backbone from ``seed`` and save it atomically (Keras wants a ``.weights.h5`` name)."""
    keras.utils.set_random_seed(int(seed))
    backbone = build_resnet_backbone((32, 32, 3), None)  # the weights do not depend on the image size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".backbone.", suffix=".tmp.weights.h5", dir=path.parent)
    os.close(fd)
    try:
        os.unlink(name)  # Keras writes the file itself
        backbone.save_weights(name)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)


# --------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class FeatureSet:
    """Pooled backbone features of one split: ``features[v, i]`` is view ``v`` of image ``i`` (0 = clean).

    ``computed`` tells whether the backbone ran for them (False: read from the cache).
    """

    features: np.ndarray
    labels: np.ndarray
    path: Path | None = None
    computed: bool = False

    @property
    def views(self) -> int:
        """Number of views including the clean one."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    def __len__(self) -> int:
        return int(self.features.shape[1])


def feature_key(*, backbone: str, weights: str, input_shape: tuple[int, int, int], normalizer: Mapping[str, Any],
                augmentation: Mapping[str, Any] | None, seed: int, views: int, split: str, data: str) -> str:
    """The cache key: a hash of everything the features depend on (see the module docstring).

    Augmentation and seed only enter when there are augmented views: the clean view does not use them.
    """
    return digest({
        "version": CACHE_VERSION, "backbone": backbone, "weights": weights,
        "input_shape": [int(v) for v in input_shape], "normalizer": dict(normalizer),
        "augmentation": dict(augmentation) if views and augmentation is not None else None,
        "seed": int(seed) if views else None, "views": int(views), "split": split, "data": data,
        "extract_batch": EXTRACT_BATCH,
    })


def extract_features(extractor: keras.Model, x: np.ndarray, *, normalizer: Normalizer,
                     augmentation: Augmentation | None, views: int, seed: int,
                     batch_size: int = EXTRACT_BATCH) -> np.ndarray:
    """Run ``extractor`` over the clean images and ``views`` augmented copies of them.

    Augmentation (on 0..255) and normalization are the pipeline's own (``make_augmenter``,
    ``Normalizer.apply``); view ``v`` of the batch starting at image ``s`` is augmented with the
    stateless seed ``(seed, v * 1000003 + s)``, so the views are reproducible. One ``predict`` call
    covers every view: no Python runs per image.

    Returns:
        float32 array (1 + views, N, D).
    """
    augmenter = make_augmenter(augmentation, seed=seed) if views and augmentation is not None else None
    if views and augmenter is None:
        raise ValueError("augmented views need an enabled augmentation")
    images, n = tf.constant(np.asarray(x, np.float32)), len(x)
    per_view = -(-n // batch_size)
    base_seed = tf.constant(int(seed), tf.int64)

    def assemble(step: tf.Tensor) -> tf.Tensor:
        view, start = step // per_view, (step % per_view) * batch_size
        batch = images[start:start + batch_size]
        if augmenter is not None:
            seed_of_batch = tf.stack([base_seed, view * _VIEW_STRIDE + start])
            batch = tf.cond(view > 0, lambda: augmenter(batch, seed=seed_of_batch), lambda: batch)
        return normalizer.apply(batch)

    steps = tf.data.Dataset.range((views + 1) * per_view)  # a known length: predict needs no end-of-data probe
    dataset = steps.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    output = extractor.predict(dataset.prefetch(tf.data.AUTOTUNE), verbose=0)
    return np.asarray(output, np.float32).reshape(views + 1, n, -1)


class FeatureCache:
    """Features of images under one backbone: read from ``cache_dir``, or computed once and stored there.

    The backbone is built lazily, only when some features are missing.
    """

    def __init__(self, *, cache_dir: Path, weights: str | Path | None, seed: int, input_shape: tuple[int, int, int],
                 normalizer: Normalizer, augmentation: Augmentation, jit_compile: bool = False) -> None:
        self.cache_dir = Path(cache_dir)
        self.backbone = backbone_weights(weights, seed=seed, cache_dir=self.cache_dir)
        self.seed, self.input_shape = int(seed), tuple(int(v) for v in input_shape)
        self.normalizer, self.augmentation, self.jit_compile = normalizer, augmentation, bool(jit_compile)
        self._extractor: keras.Model | None = None

    def path(self, *, split: str, data: str, views: int) -> Path:
        """Where the features of ``split`` with ``views`` augmented views are stored."""
        key = feature_key(backbone=BACKBONE_NAME, weights=self.backbone.identity, input_shape=self.input_shape,
                          normalizer=self.normalizer.to_dict(), augmentation=self.augmentation.to_dict(),
                          seed=self.seed, views=views, split=split, data=data)
        return self.cache_dir / f"features-{key}.npz"

    def features(self, x: np.ndarray, y: np.ndarray, *, split: str, data: str, views: int = 0) -> FeatureSet:
        """Features of images ``x`` (labels ``y``) of ``split``, whose content is identified by ``data``."""
        if views and not self.augmentation.enabled:
            raise ValueError("augmented views need an enabled augmentation")
        path = self.path(split=split, data=data, views=views)
        labels = np.asarray(y, np.float32).reshape(-1)
        cached = _read(path, labels, views + 1)
        if cached is not None:
            return FeatureSet(cached, labels, path, computed=False)
        values = extract_features(self._model(), x, normalizer=self.normalizer, augmentation=self.augmentation,
                                  views=views, seed=self.seed)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, features=values, labels=labels, version=CACHE_VERSION)
        return FeatureSet(values, labels, path, computed=True)

    def release(self) -> None:
        """Drop the backbone (its memory) once every needed feature is there."""
        self._extractor = None

    def _model(self) -> keras.Model:
        if self._extractor is None:
            self._extractor = head_on_features(None, self.input_shape, self.backbone.source).feature_extractor()
            self._extractor.compile(jit_compile=self.jit_compile)
        return self._extractor


def _read(path: Path, labels: np.ndarray, views: int) -> np.ndarray | None:
    """Cached features, or None when absent, unreadable or not matching (they are then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            features, stored = data["features"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if features.dtype != np.float32 or features.ndim != 3 or features.shape[:2] != (views, len(labels)):
        return None
    return features if np.array_equal(stored, labels) else None


# --------------------------------------------------------------------------- training on features
def feature_dataset(features: FeatureSet, *, batch_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
    """A batched ``(features, labels)`` dataset over cached features.

    Training: shuffled (seeded, a new order every epoch) and, with several views, one view per image
    drawn at random for every batch (seeded stream, a different draw every epoch) with one
    ``gather_nd`` per batch. Evaluation: the clean view, in order.
    """
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, but got {batch_size!r}")
    table = tf.constant(features.features if training else features.features[:1])
    labels = tf.constant(features.labels)
    indices = tf.data.Dataset.range(len(features))
    if training:
        indices = indices.shuffle(max(len(features), 1), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(int(batch_size))
    views = int(table.shape[0])

    def assemble(index: tf.Tensor, batch_seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        if batch_seed is None:
            return tf.gather(table[0], index), tf.gather(labels, index)
        view = tf.random.stateless_uniform(tf.shape(index), tf.stack([tf.constant(int(seed), tf.int64), batch_seed]),
                                           minval=0, maxval=views, dtype=tf.int64)
        return tf.gather_nd(table, tf.stack([view, index], axis=1)), tf.gather(labels, index)

    if views > 1:
        batches = tf.data.Dataset.zip(batches, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
    return batches.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- studies
def uses_feature_cache(config: StudyConfig) -> bool:
    """True when the study searches its head on cached backbone features."""
    cache = getattr(config, "feature_cache", None)
    return config.family == "resnet50v2_head" and cache is not None and bool(cache.enabled)


def feature_views(config: StudyConfig) -> int:
    """Augmented views per training image the study caches (0 without augmentation)."""
    return int(config.feature_cache.views) if config.augmentation.enabled else 0


def _data_id(prepared: PreparedData, split: str) -> str:
    """Content fingerprint of one split plus the order of its images (the rows of the features)."""
    order = [f"{r.class_name}/{r.path.name}" for r in prepared.source.split(split)]
    return digest({"fingerprint": prepared.source.fingerprint(splits=(split,)), "order": order}, length=64)


def study_feature_cache(config: StudyConfig, prepared: PreparedData, cache_dir: Path) -> FeatureCache:
    """The feature cache of a study (its backbone, normalizer, augmentation and seed)."""
    return FeatureCache(cache_dir=cache_dir, weights=config.weights, seed=config.seed,
                        input_shape=prepared.input_shape, normalizer=prepared.normalizer,
                        augmentation=config.augmentation, jit_compile=config.jit_compile)


def split_features(cache: FeatureCache, prepared: PreparedData, split: str, views: int) -> FeatureSet:
    """Features of the ``train`` or ``val`` split of ``prepared`` (read from the cache, or computed once)."""
    x, y = (prepared.x_train, prepared.y_train) if split == "train" else (prepared.x_val, prepared.y_val)
    found = cache.features(x, y, split=split, data=_data_id(prepared, split), views=views)
    log.info("features of %s (%d images x %d view(s)): %s %s", split, len(found), found.views,
             "computed" if found.computed else "read", found.path)
    return found
