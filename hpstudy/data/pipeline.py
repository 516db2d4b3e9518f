"""Decode, resize, normalize and augment images, and feed them to Keras through ``tf.data``.

Every image is decoded once, turned into one grey channel, resized, and kept with the rest of its
split in one float32 array ``(N, H, W, 1)`` on the 0..255 scale (optionally cached as ``.npz``).
Training datasets are built from that array: shuffled indices, one ``gather`` per batch, vectorized
augmentation of the whole batch (``hpstudy.data.augment``), normalization, optional repeat to 3
channels, prefetch. No Python runs per image after decoding.

Methodology rules enforced here (``docs/architecture.md``): normalization statistics are fitted on the
training split only (``Normalizer.fit`` takes nothing else), and augmentation is applied to
training batches only (``make_dataset`` refuses it for evaluation), before normalization.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from hpstudy._io import atomic_path, atomic_write_json, read_json
from hpstudy.config.settings import NORMALIZATIONS, Augmentation
from hpstudy.data.augment import make_augmenter, single_transforms
from hpstudy.errors import ConfigError, DataError, HpstudyError

if TYPE_CHECKING:
    from hpstudy.data.discover import ImageRecord

__all__ = [
    "DEFAULT_IMAGE_SIZE", "decode_image", "load_images", "load_split", "Normalizer", "make_augmenter",
    "single_transforms", "make_dataset", "class_weights",
]

DEFAULT_IMAGE_SIZE = (128, 128)
# ITU-R BT.601 luma weights of tf.image.rgb_to_grayscale, rescaled to sum to exactly 1 so that a grey
# image stored as RGB decodes to the same values as the same image stored with one channel.
_LUMA = (0.2989 / 0.9999, 0.5870 / 0.9999, 0.1140 / 0.9999)
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- decoding

def _to_gray(contents: tf.Tensor, image_size: tuple[int, int] | None) -> tf.Tensor:
    """Encoded bytes -> (H, W, 1) float32 on 0..255; works eagerly and inside ``tf.data``."""
    # float32 decoding scales 8-bit data by 1/255 and 16-bit PNG by 1/65535: both end on 0..255 below.
    image = tf.io.decode_image(contents, channels=0, dtype=tf.float32, expand_animations=False) * 255.0
    channels = tf.shape(image)[-1]
    image = tf.cond(channels >= 3,  # RGB or RGBA (alpha dropped) -> luminance; grey or grey+alpha -> grey
                    lambda: tf.tensordot(image[..., :3], tf.constant(_LUMA), axes=[[2], [0]])[..., None],
                    lambda: image[..., :1])
    image.set_shape([None, None, 1])
    if image_size is not None:
        image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return image


def _check_size(image_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be (height, width) with positive integers, but got {image_size!r}")
    return size  # type: ignore[return-value]


def decode_image(path: str | Path, *, image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Read one PNG/JPEG/BMP/GIF file as a grey float image.

    RGB becomes luminance (BT.601), RGBA loses its alpha first, 16-bit data is scaled to 0..255.

    Args:
        path: image file.
        image_size: (height, width) to resize to (bilinear, antialiased); None keeps the stored size.

    Returns:
        float32 array (H, W, 1) with values in 0..255.

    Raises:
        DataError: the file is missing, empty or not a decodable image (the message names it).
    """
    size = _check_size(image_size)
    try:
        contents = Path(path).read_bytes()
        if not contents:
            raise DataError("the file is empty")
        return _to_gray(tf.constant(contents), size).numpy()
    except (OSError, tf.errors.OpError, DataError) as exc:
        raise DataError(f"cannot decode image {path}: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.strip().splitlines()[0].split(" [Op:")[0]


def load_images(paths: Sequence[str | Path], *,
                image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Decode many images in parallel (``tf.data`` map) into one array.

    Returns:
        float32 array (N, H, W, 1) on 0..255, in the order of ``paths``.

    Raises:
        DataError: one or more files cannot be decoded (all of them are listed), or ``image_size`` is
            None and the images differ in size.
    """
    size = _check_size(image_size)
    names = [str(p) for p in paths]
    if not names:
        return np.zeros((0, *(size or (0, 0)), 1), np.float32)
    try:
        return _load_fast(names, size)
    except tf.errors.OpError:
        pass  # find every bad file, not just the first one tf.data stumbled on
    failures = []
    for name in names:
        try:
            decode_image(name, image_size=size)
        except DataError as exc:
            failures.append(f"  {exc}")
    if not failures:  # a transient read error: try once more, and let it raise
        return _load_fast(names, size)
    raise DataError(f"{len(failures)} of {len(names)} image(s) cannot be decoded:\n" + "\n".join(failures))


def _load_fast(names: list[str], size: tuple[int, int] | None) -> np.ndarray:
    dataset = tf.data.Dataset.from_tensor_slices(names).map(
        lambda name: _to_gray(tf.io.read_file(name), size), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    if size is None:
        images = list(dataset.as_numpy_iterator())
        shapes = sorted({im.shape[:2] for im in images})
        if len(shapes) > 1:
            raise DataError(f"images differ in size ({shapes[:5]}...): give an image_size to resize them")
        return np.stack(images).astype(np.float32, copy=False)
    out = np.empty((len(names), *size, 1), np.float32)
    start = 0
    for batch in dataset.batch(256).prefetch(2).as_numpy_iterator():
        out[start:start + len(batch)] = batch
        start += len(batch)
    return out


def load_split(records: Sequence[ImageRecord], *, image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
               cache_dir: str | Path | None = None, cache_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and binary labels of one split, in record order, optionally cached on disk.

    Args:
        records: the split's ``ImageRecord`` objects (``path`` and ``label`` are used).
        image_size: (height, width) after resizing; None keeps the stored size.
        cache_dir, cache_key: when both are given, the decoded array is stored in ``cache_dir`` as an
            ``.npz`` named from a hash of the key, the image size and the record paths, and reused
            by later calls with the same three (e.g. every trial and the finalizer).

    Returns:
        ``(x, y)``: float32 (N, H, W, 1) on 0..255 and float32 (N,) labels.
    """
    size = _check_size(image_size)
    paths = [str(r.path) for r in records]
    y = np.asarray([r.label for r in records], dtype=np.float32)
    if cache_dir is None or cache_key is None:
        return load_images(paths, image_size=size), y
    cache = Path(cache_dir) / _cache_name(cache_key, size, paths)
    x = _read_cache(cache, len(paths), size)
    if x is None:
        x = load_images(paths, image_size=size)
        with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, x=x, version=_CACHE_VERSION)
    return x, y


def _cache_name(cache_key: str, size: tuple[int, int] | None, paths: list[str]) -> str:
    blob = json.dumps({"key": cache_key, "size": size, "paths": paths, "version": _CACHE_VERSION})
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]
    shown = "orig" if size is None else f"{size[0]}x{size[1]}"
    return f"images_{shown}_{digest}.npz"


def _read_cache(cache: Path, n: int, size: tuple[int, int] | None) -> np.ndarray | None:
    """The cached array, or None when absent, unreadable or not matching (it is then rebuilt)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache) as data:
            x = data["x"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if x.dtype != np.float32 or x.ndim != 4 or len(x) != n or (size is not None and x.shape[1:3] != size):
        return None
    return x


# --------------------------------------------------------------------------- normalization

@dataclass(frozen=True)
class Normalizer:
    """Pixel normalization with statistics fitted on the training split only.

    Strategies (``x`` on 0..255): ``fixed``: ``x / 255``; ``dataset``: ``(x - mean) / std`` with the
    training split's global pixel mean and std; ``per_image``: ``(x - mean_i) / max(std_i, epsilon)``
    with each image's own mean and std (like ``tf.image.per_image_standardization``).
    """

    strategy: str
    mean: float = 0.0
    std: float = 255.0
    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if self.strategy not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalization {self.strategy!r}; expected one of {list(NORMALIZATIONS)}")
        for name in ("mean", "std", "epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(f"normalizer {name} must be a finite number, but got {value!r}")
        if self.std <= 0 or self.epsilon <= 0:
            raise DataError(f"normalizer std and epsilon must be > 0, but got std={self.std}, epsilon={self.epsilon}")

    @classmethod
    def fit(cls, strategy: str, train_x: np.ndarray) -> Normalizer:
        """Fit on the TRAINING images only (N, H, W, C) on 0..255; val/test never reach this method.

        Raises:
            ConfigError: unknown strategy (the valid ones are listed).
            DataError: ``train_x`` is empty or not (N, H, W, C).
        """
        if strategy not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalization {strategy!r}; expected one of {list(NORMALIZATIONS)}")
        train_x = np.asarray(train_x)
        if train_x.ndim != 4 or len(train_x) == 0:
            raise DataError(f"Normalizer.fit needs training images (N, H, W, C) with N > 0, got {train_x.shape}")
        if strategy != "dataset":
            return cls(strategy)
        mean, std = _global_mean_std(train_x)
        return cls("dataset", mean=mean, std=max(std, 1e-6))

    def apply(self, x: Any) -> Any:
        """Normalize a NumPy array or a tf tensor, one image (H, W, C) or a batch (B, H, W, C)."""
        lib, x = _lib(x)
        if self.strategy == "fixed":
            return x / 255.0
        if self.strategy == "dataset":
            return (x - self.mean) / self.std
        axes = (-3, -2, -1)
        if lib is np:
            mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
            return ((x - mean) / np.maximum(std, self.epsilon)).astype(np.float32)
        mean, variance = tf.nn.moments(x, axes=[-3, -2, -1], keepdims=True)
        return (x - mean) / tf.maximum(tf.sqrt(variance), self.epsilon)

    def invert(self, x: Any) -> Any:
        """Back to 0..255 for display; ``per_image`` cannot be undone and is min-max scaled per image."""
        lib, x = _lib(x)
        if self.strategy == "fixed":
            return x * 255.0
        if self.strategy == "dataset":
            return x * self.std + self.mean
        if lib is np:
            low, high = x.min(axis=(-3, -2, -1), keepdims=True), x.max(axis=(-3, -2, -1), keepdims=True)
            return ((x - low) / np.maximum(high - low, self.epsilon) * 255.0).astype(np.float32)
        low = tf.reduce_min(x, axis=[-3, -2, -1], keepdims=True)
        high = tf.reduce_max(x, axis=[-3, -2, -1], keepdims=True)
        return (x - low) / tf.maximum(high - low, self.epsilon) * 255.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        """Rebuild from ``to_dict`` output; a ``fitted_on`` key other than "train" is refused."""
        if not isinstance(d, dict) or "strategy" not in d:
            raise DataError(f"normalizer statistics must be a mapping with a 'strategy', but got {d!r}")
        if d.get("fitted_on", "train") != "train":
            raise DataError(f"normalizer statistics were fitted on {d['fitted_on']!r}; only 'train' is allowed")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> Path:
        """Write the statistics as JSON (atomically), marked as fitted on the training split."""
        return atomic_write_json(path, {**self.to_dict(), "fitted_on": "train"})

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        """Read ``save`` output; errors name the file."""
        try:
            data = read_json(path)
        except OSError as exc:
            raise DataError(f"cannot read normalizer statistics {path}: {exc}") from exc
        except ValueError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: invalid normalizer statistics: {exc}") from exc
        except HpstudyError as exc:
            raise type(exc)(f"{path}: {exc}") from exc


def _global_mean_std(x: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and std of all pixels in float64, chunk by chunk (no full-size temporary copy)."""
    total = total_sq = 0.0
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].astype(np.float64)
        total += float(part.sum())
        total_sq += float(np.square(part).sum())
    count = x.size
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


def _lib(x: Any) -> tuple[Any, Any]:
    if tf.is_tensor(x):
        return tf, tf.cast(x, tf.float32)
    return np, np.asarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- tf.data

def make_dataset(x: np.ndarray, y: np.ndarray | None, *, batch_size: int, normalizer: Normalizer, training: bool,
                 augmentation: Augmentation | None = None, seed: int = 0, channels: int = 1,
                 shuffle: bool | None = None) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of normalized images (and labels) held in memory.

    Training: shuffle (seeded, a new order every epoch) -> batch -> augment -> normalize -> channels.
    Evaluation: batch -> normalize -> channels, in order, never augmented.

    Args:
        x: images (N, H, W, 1) on 0..255 (``load_split`` output).
        y: labels (N,) or None to yield images only.
        batch_size: images per batch (the last batch may be smaller).
        normalizer: fitted on the training split.
        training: True for the training dataset.
        augmentation: random transforms for training batches; applied on 0..255 before normalizing.
        seed: seeds the shuffle order and the augmentation stream.
        channels: 1, or 3 to repeat the grey channel (ImageNet backbones).
        shuffle: override; default True for training and False otherwise.

    Raises:
        ValueError: augmentation with ``training=False``, bad shapes or arguments.
    """
    if not training and augmentation is not None:
        raise ValueError("augmentation applies to training batches only: do not pass it with training=False")
    x = _check_arrays(x, y, batch_size, channels)
    augmenter = make_augmenter(augmentation, seed=seed) if augmentation is not None else None
    images = tf.constant(x)
    labels = None if y is None else tf.constant(np.asarray(y, dtype=np.float32).reshape(-1))
    indices = tf.data.Dataset.range(len(x))
    if (training if shuffle is None else shuffle):
        indices = indices.shuffle(max(len(x), 1), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size)
    base_seed = tf.constant(int(seed), tf.int64)

    def assemble(index: tf.Tensor, batch_seed: tf.Tensor | None = None) -> Any:
        batch = tf.gather(images, index)
        if augmenter is not None:
            batch = augmenter(batch, seed=tf.stack([base_seed, batch_seed]))
        batch = normalizer.apply(batch)
        if channels == 3:
            batch = tf.repeat(batch, 3, axis=-1)
        return batch if labels is None else (batch, tf.gather(labels, index))

    if augmenter is not None:  # one random int per batch, a different stream every epoch
        batches = tf.data.Dataset.zip(batches, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
    dataset = batches.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _check_arrays(x: np.ndarray, y: np.ndarray | None, batch_size: int, channels: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"x must be grey images (N, H, W, 1), but got shape {x.shape}")
    if y is not None and len(np.asarray(y).reshape(-1)) != len(x):
        raise ValueError(f"x and y differ in length: {len(x)} images, {len(np.asarray(y).reshape(-1))} labels")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, but got {batch_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, but got {channels!r}")
    return x


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced Keras ``class_weight`` for binary labels: ``n / (2 * n_c)`` for class ``c``.

    Raises:
        DataError: labels other than 0/1, or a class with no example.
    """
    labels = np.asarray(y).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"class_weights needs binary 0/1 labels, but got values {np.unique(labels)[:5].tolist()}")
    counts = [int(np.sum(labels == c)) for c in (0, 1)]
    if min(counts) == 0:
        raise DataError(f"class_weights needs examples of both classes, but got counts {counts}")
    return {c: len(labels) / (2.0 * counts[c]) for c in (0, 1)}
