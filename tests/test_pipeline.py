"""Tests of hpstudy.data.pipeline: decoding, caching, train-only normalization, augmentation, tf.data."""

from __future__ import annotations

import inspect
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from hpstudy.config.settings import Augmentation  # noqa: E402
from hpstudy.data import augment, pipeline  # noqa: E402
from hpstudy.data.pipeline import (  # noqa: E402
    Normalizer,
    class_weights,
    decode_image,
    load_images,
    load_split,
    make_augmenter,
    make_dataset,
    single_transforms,
)
from hpstudy.errors import ConfigError, DataError  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "xray-sample"
if not SAMPLE.is_dir():
    SAMPLE = Path("/work/shared/data/xray-sample")
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real X-ray sample not found at {SAMPLE}")
SIZE = (32, 32)


@dataclass(frozen=True)
class Record:
    """Stand-in with the fields of ``discover.ImageRecord`` that the pipeline reads."""

    path: Path
    split: str
    class_name: str
    label: int


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    tf.random.set_seed(0)


def _asymmetric(h: int = 32, w: int = 32) -> np.ndarray:
    """Grey 50..200 image with a horizontal gradient and a bright off-centre block: no symmetry."""
    image = np.tile(np.linspace(50, 150, w, dtype=np.float32), (h, 1))
    image[3:10, 4:14] = 200.0
    return image[..., None]


def _write(path: Path, array: np.ndarray, *, jpeg: bool = False) -> Path:
    data = tf.io.encode_jpeg(array, quality=100) if jpeg else tf.io.encode_png(array)
    path.write_bytes(data.numpy())
    return path


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny images in every supported layout, 24 x 40 (H x W)."""
    root = tmp_path_factory.mktemp("images")
    gray = (np.arange(24 * 40).reshape(24, 40, 1) % 251).astype(np.uint8)
    rgb = np.concatenate([gray, gray, gray], axis=-1)
    return {
        "gray": _write(root / "gray.png", gray),
        "rgb": _write(root / "rgb.png", rgb),
        "rgba": _write(root / "rgba.png", np.concatenate([rgb, np.zeros_like(gray)], axis=-1)),
        "gray16": _write(root / "gray16.png", np.full((24, 40, 1), 65535, np.uint16)),
        "jpeg": _write(root / "rgb.jpg", rgb, jpeg=True),
    }


# --------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba", "gray16", "jpeg"])
def test_decode_gives_grey_float_on_0_255(files: dict[str, Path], kind: str) -> None:
    image = decode_image(files[kind], image_size=SIZE)
    assert image.shape == (*SIZE, 1) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 255.0


def test_decode_keeps_values_across_layouts(files: dict[str, Path]) -> None:
    gray = decode_image(files["gray"], image_size=None)
    assert gray.shape == (24, 40, 1)
    np.testing.assert_allclose(gray[..., 0], np.arange(24 * 40).reshape(24, 40) % 251, atol=1e-3)
    np.testing.assert_allclose(decode_image(files["rgb"], image_size=None), gray, atol=1e-3)
    np.testing.assert_allclose(decode_image(files["rgba"], image_size=None), gray, atol=1e-3)  # alpha 0 ignored
    assert np.abs(decode_image(files["jpeg"], image_size=None) - gray).mean() < 4  # lossy, but the same picture
    np.testing.assert_allclose(decode_image(files["gray16"], image_size=SIZE), 255.0, atol=1e-3)


def test_decode_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        decode_image(bad)


def test_load_images_matches_decode_image_in_order(files: dict[str, Path]) -> None:
    paths = [files["jpeg"], files["gray"], files["gray16"]]
    x = load_images(paths, image_size=SIZE)
    assert x.shape == (3, *SIZE, 1) and x.dtype == np.float32
    for image, path in zip(x, paths):
        np.testing.assert_allclose(image, decode_image(path, image_size=SIZE), atol=1e-4)


def test_load_images_lists_every_bad_file(files: dict[str, Path], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(files["gray"].read_bytes()[:40])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError, match=r"3 of 4 image") as info:
        load_images([files["gray"], corrupt, empty, missing], image_size=SIZE)
    message = str(info.value)
    assert all(name in message for name in ("corrupt.png", "empty.png", "missing.png"))
    assert "gray.png" not in message


def test_load_images_without_resize_refuses_mixed_sizes(files: dict[str, Path], tmp_path: Path) -> None:
    small = _write(tmp_path / "small.png", np.zeros((8, 8, 1), np.uint8))
    assert load_images([files["gray"], files["rgb"]], image_size=None).shape == (2, 24, 40, 1)
    with pytest.raises(DataError, match="image_size"):
        load_images([files["gray"], small], image_size=None)


@needs_sample
def test_load_images_reads_real_xrays() -> None:
    paths = sorted((SAMPLE / "train" / "covid").glob("*.png"))[:4]
    x = load_images(paths, image_size=SIZE)
    assert x.shape == (4, *SIZE, 1) and 0 <= x.min() and x.max() <= 255 and x.std() > 10


# --------------------------------------------------------------------------- cache

def test_load_split_cache_is_reused(files: dict[str, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    records = [Record(files["gray"], "train", "a", 0), Record(files["rgb"], "train", "b", 1)]
    calls: list[int] = []
    real = pipeline.load_images

    def counting(paths, *, image_size):  # type: ignore[no-untyped-def]
        calls.append(len(paths))
        return real(paths, image_size=image_size)

    monkeypatch.setattr(pipeline, "load_images", counting)
    x1, y1 = load_split(records, image_size=SIZE, cache_dir=tmp_path, cache_key="k")
    x2, y2 = load_split(records, image_size=SIZE, cache_dir=tmp_path, cache_key="k")
    assert calls == [2] and len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(x1, x2)
    assert y1.dtype == np.float32 and y1.tolist() == y2.tolist() == [0.0, 1.0]
    x3, _ = load_split(records, image_size=(16, 16), cache_dir=tmp_path, cache_key="k")
    assert calls == [2, 2] and x3.shape == (2, 16, 16, 1) and len(list(tmp_path.glob("*.npz"))) == 2
    load_split(records[::-1], image_size=SIZE, cache_dir=tmp_path, cache_key="k")  # other paths: other file
    assert len(calls) == 3 and len(list(tmp_path.glob("*.npz"))) == 3


def test_load_split_rebuilds_a_corrupt_cache(files: dict[str, Path], tmp_path: Path) -> None:
    records = [Record(files["gray"], "train", "a", 0)]
    x, _ = load_split(records, image_size=SIZE, cache_dir=tmp_path, cache_key="k")
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(b"garbage")
    again, _ = load_split(records, image_size=SIZE, cache_dir=tmp_path, cache_key="k")
    np.testing.assert_array_equal(x, again)


# --------------------------------------------------------------------------- normalization

def test_normalizer_math() -> None:
    x = np.random.default_rng(0).uniform(0, 255, (3, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(Normalizer.fit("fixed", x).apply(x), x / 255, rtol=1e-6)
    dataset = Normalizer.fit("dataset", x)
    assert dataset.mean == pytest.approx(x.mean(dtype=np.float64)) and dataset.std == pytest.approx(x.std())
    np.testing.assert_allclose(dataset.apply(x), (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5)
    per_image = Normalizer.fit("per_image", x)
    expected = tf.image.per_image_standardization(x).numpy()
    np.testing.assert_allclose(per_image.apply(x), expected, atol=1e-5)
    np.testing.assert_allclose(per_image.apply(x[0]), expected[0], atol=1e-5)  # one image
    for norm in (Normalizer("fixed"), dataset, per_image):  # NumPy and TF agree
        np.testing.assert_allclose(norm.apply(tf.constant(x)).numpy(), norm.apply(x), atol=1e-5)


def test_normalizer_invert() -> None:
    x = np.random.default_rng(1).uniform(10, 200, (2, 4, 4, 1)).astype(np.float32)
    for norm in (Normalizer("fixed"), Normalizer.fit("dataset", x)):
        np.testing.assert_allclose(norm.invert(norm.apply(x)), x, rtol=1e-5)
        np.testing.assert_allclose(norm.invert(tf.constant(norm.apply(x))).numpy(), x, rtol=1e-5)
    shown = Normalizer("per_image").invert(Normalizer("per_image").apply(x))
    np.testing.assert_allclose(shown.min(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(shown.max(axis=(1, 2, 3)), 255, atol=1e-3)
    flat = Normalizer("per_image").apply(np.full((1, 4, 4, 1), 7.0, np.float32))
    assert np.all(flat == 0)  # a constant image: epsilon prevents a division by zero


def test_normalizer_rejects_unknown_strategy_and_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"'zscore'.*fixed.*dataset.*per_image"):
        Normalizer.fit("zscore", np.zeros((1, 2, 2, 1)))
    with pytest.raises(DataError, match="N > 0"):
        Normalizer.fit("dataset", np.zeros((0, 2, 2, 1)))


def test_normalizer_save_load_round_trip(tmp_path: Path) -> None:
    norm = Normalizer.fit("dataset", np.random.default_rng(2).uniform(0, 255, (4, 3, 3, 1)))
    path = norm.save(tmp_path / "norm.json")
    assert '"fitted_on": "train"' in path.read_text()
    assert Normalizer.load(path) == norm
    assert Normalizer.from_dict(norm.to_dict()) == norm


@pytest.mark.parametrize("content, error", [
    ("{", DataError), ('{"mean": 1}', DataError), ('{"strategy": "minmax"}', ConfigError),
    ('{"strategy": "dataset", "std": 0}', DataError),
    ('{"strategy": "dataset", "mean": 1, "std": 2, "fitted_on": "test"}', DataError),
])
def test_normalizer_load_names_the_file(tmp_path: Path, content: str, error: type) -> None:
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(error, match="stats.json"):
        Normalizer.load(path)


def _train_records(root: Path) -> list[Record]:
    """The normal flow's train split: discover() when available, else a plain folder listing."""
    try:
        from hpstudy.data.discover import discover
    except ImportError:
        names = sorted(p.name for p in (root / "train").iterdir())
        return [Record(p, "train", c, int(c == "covid"))
                for c in names for p in sorted((root / "train" / c).glob("*.png"))]
    return list(discover(root, positive_class="covid").split("train"))


@needs_sample
def test_normalization_statistics_depend_on_train_only(tmp_path: Path) -> None:
    assert list(inspect.signature(Normalizer.fit).parameters) == ["strategy", "train_x"]
    x_train, _ = load_split(_train_records(SAMPLE), image_size=SIZE)
    before = Normalizer.fit("dataset", x_train)

    changed = tmp_path / "xray"
    shutil.copytree(SAMPLE, changed)
    held_out = sorted((changed / "val").rglob("*.png")) + sorted((changed / "test").rglob("*.png"))
    old = load_images(held_out, image_size=SIZE)
    for path in held_out:  # darken every val/test image
        pixels = tf.io.decode_png(path.read_bytes()).numpy()
        _write(path, (pixels // 2).astype(np.uint8))
    assert load_images(held_out, image_size=SIZE).mean() < 0.6 * old.mean()  # the change is real

    x_after, _ = load_split(_train_records(changed), image_size=SIZE)
    after = Normalizer.fit("dataset", x_after)
    assert (after.mean, after.std) == (before.mean, before.std)
    assert 0 < before.mean < 255 and before.std > 10


# --------------------------------------------------------------------------- augmentation

def _batch(n: int = 8) -> tf.Tensor:
    return tf.constant(np.repeat(_asymmetric()[None], n, axis=0))


@pytest.mark.parametrize("name, value", [("rotation", 20.0), ("shift", 0.2), ("zoom", 0.2),
                                         ("brightness", 0.2), ("contrast", 0.3), ("horizontal_flip", True)])
def test_each_single_transform_changes_the_image(name: str, value: float) -> None:
    augmentation = Augmentation(**{**Augmentation.none().to_dict(), name: value})
    augment = make_augmenter(augmentation, seed=3)
    assert augment is not None
    batch = _batch()
    out = augment(batch)
    assert out.shape == batch.shape and out.dtype == tf.float32
    changed = np.abs(out.numpy() - batch.numpy()).max(axis=(1, 2, 3)) > 1e-3
    assert changed.any()
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    if name != "horizontal_flip":
        assert changed.all()
        assert not np.allclose(out[0].numpy(), out[1].numpy())  # each image gets its own parameters


def test_augmenter_is_none_when_disabled() -> None:
    assert make_augmenter(Augmentation.none(), seed=0) is None
    assert single_transforms(Augmentation.none()) == {}


def test_augmenter_is_reproducible() -> None:
    augmentation = Augmentation(rotation=15, shift=0.1, zoom=0.1, brightness=0.1, contrast=0.1, horizontal_flip=True)
    batch = _batch()
    first, second = make_augmenter(augmentation, seed=5), make_augmenter(augmentation, seed=5)
    a1, a2 = first(batch), first(batch)  # type: ignore[misc]
    np.testing.assert_array_equal(a1.numpy(), second(batch).numpy())  # type: ignore[misc]
    np.testing.assert_array_equal(a2.numpy(), second(batch).numpy())  # type: ignore[misc]
    assert not np.allclose(a1.numpy(), a2.numpy())  # successive calls differ
    other = make_augmenter(augmentation, seed=6)(batch)  # type: ignore[misc]
    assert not np.allclose(a1.numpy(), other.numpy())
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(first(batch, seed=seed).numpy(),  # type: ignore[misc]
                                  second(batch, seed=seed).numpy())  # type: ignore[misc]
    assert first(batch[0]).shape == batch.shape[1:]  # type: ignore[misc]


def test_affine_matrix_shifts_and_rotates_exactly() -> None:
    image = tf.constant(_asymmetric(8, 8)[None])
    size = tf.constant([8.0, 8.0])

    def warp(angle: float, shift: tuple[float, float], scale: float = 1.0) -> np.ndarray:
        transform = augment._affine(tf.constant([angle]), tf.constant([shift]), tf.constant([scale]), size)
        return tf.raw_ops.ImageProjectiveTransformV3(images=image, transforms=transform, output_shape=[8, 8],
                                                     fill_value=0.0, interpolation="BILINEAR",
                                                     fill_mode="CONSTANT").numpy()[0, ..., 0]

    source = image.numpy()[0, ..., 0]
    np.testing.assert_allclose(warp(0.0, (0.0, 0.0)), source, atol=1e-4)
    shifted = warp(0.0, (2.0, 1.0))  # content moves right by 2 and down by 1, black fill behind it
    np.testing.assert_allclose(shifted[1:, 2:], source[:-1, :-2], atol=1e-4)
    assert np.all(shifted[:1] == 0) and np.all(shifted[:, :2] == 0)
    turned = warp(math.pi / 2, (0.0, 0.0))
    assert any(np.allclose(turned, np.rot90(source, k), atol=1e-3) for k in (1, 3))


def test_single_transforms_isolate_each_active_transform() -> None:
    augmentation = Augmentation(rotation=10, shift=0.0, zoom=0.2, brightness=0.0, contrast=0.1, horizontal_flip=True)
    parts = single_transforms(augmentation)
    assert list(parts) == ["rotation", "zoom", "contrast", "horizontal_flip", "combined"]
    assert parts["combined"] == augmentation
    assert parts["zoom"] == Augmentation(rotation=0, shift=0, zoom=0.2, brightness=0, contrast=0)
    assert all(sum(bool(v) for v in p.to_dict().values()) == 1 for k, p in parts.items() if k != "combined")


# --------------------------------------------------------------------------- tf.data

@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(3).uniform(20, 230, (10, 16, 16, 1)).astype(np.float32)
    return x, np.arange(10, dtype=np.float32)  # labels = indices, to follow the order


def _labels(dataset: tf.data.Dataset) -> list[float]:
    return [float(v) for _, y in dataset for v in y.numpy()]


def test_eval_dataset_shapes_order_and_normalization(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = arrays
    norm = Normalizer.fit("dataset", x)
    dataset = make_dataset(x, y, batch_size=4, normalizer=norm, training=False)
    batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][0].shape[1:] == (16, 16, 1) and batches[0][1].dtype == tf.float32
    assert batches[0][1].shape == (4,)
    assert _labels(dataset) == list(range(10)) == _labels(dataset)  # in order, twice
    images = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_allclose(images, norm.apply(x), atol=1e-5)  # not augmented
    np.testing.assert_array_equal(images, np.concatenate([b[0].numpy() for b in dataset]))


def test_channels_3_and_images_only(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = arrays
    dataset = make_dataset(x, None, batch_size=5, normalizer=Normalizer("fixed"), training=False, channels=3)
    batch = next(iter(dataset)).numpy()
    assert batch.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    np.testing.assert_allclose(batch[..., 1], x[:5, ..., 0] / 255, rtol=1e-6)


def test_training_shuffle_is_seeded_and_changes_each_epoch(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = arrays

    def build(seed: int) -> tf.data.Dataset:
        return make_dataset(x, y, batch_size=4, normalizer=Normalizer("fixed"), training=True, seed=seed)

    dataset = build(1)
    epoch1, epoch2 = _labels(dataset), _labels(dataset)
    assert sorted(epoch1) == list(range(10)) and epoch1 != list(range(10))
    assert epoch1 != epoch2  # reshuffled every epoch
    rebuilt = build(1)
    assert (_labels(rebuilt), _labels(rebuilt)) == (epoch1, epoch2)  # same seed, same sequence
    assert _labels(build(2)) != epoch1


def test_training_augmentation(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = arrays
    augmentation = Augmentation(rotation=10, shift=0.1, zoom=0.1, brightness=0.1)
    norm = Normalizer("fixed")

    def build() -> tf.data.Dataset:
        return make_dataset(x, y, batch_size=5, normalizer=norm, training=True, augmentation=augmentation,
                            seed=4, shuffle=False)

    dataset = build()
    first, second = [np.concatenate([b[0].numpy() for b in dataset]) for _ in range(2)]
    assert first.shape == x.shape and first.dtype == np.float32
    assert not np.allclose(first, norm.apply(x), atol=1e-3)  # pixels changed
    assert not np.allclose(first, second)  # new random transforms each epoch
    np.testing.assert_array_equal(first, np.concatenate([b[0].numpy() for b in build()]))  # seeded
    assert _labels(dataset) == list(range(10))  # labels stay with their images


def test_augmentation_is_refused_for_evaluation(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = arrays
    with pytest.raises(ValueError, match="training batches only"):
        make_dataset(x, y, batch_size=2, normalizer=Normalizer("fixed"), training=False, augmentation=Augmentation())


def test_make_dataset_checks_arguments(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = arrays
    norm = Normalizer("fixed")
    with pytest.raises(ValueError, match="differ in length"):
        make_dataset(x, y[:3], batch_size=2, normalizer=norm, training=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(x, y, batch_size=0, normalizer=norm, training=False)
    with pytest.raises(ValueError, match="channels"):
        make_dataset(x, y, batch_size=2, normalizer=norm, training=False, channels=2)


def test_class_weights() -> None:
    assert class_weights(np.array([0, 0, 0, 1.0])) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert class_weights(np.array([0, 1])) == {0: 1.0, 1: 1.0}
    with pytest.raises(DataError, match="both classes"):
        class_weights(np.zeros(4))
    with pytest.raises(DataError, match="binary"):
        class_weights(np.array([0, 2]))


def test_datasets_feed_keras_fit_with_class_weights(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    import keras

    x, _ = arrays
    y = (np.arange(10) % 2).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    norm = Normalizer.fit("per_image", x)
    train = make_dataset(x, y, batch_size=4, normalizer=norm, training=True, augmentation=Augmentation(), channels=3)
    history = model.fit(train, epochs=2, verbose=0, class_weight=class_weights(y), shuffle=False)
    assert len(history.history["loss"]) == 2 and all(map(math.isfinite, history.history["loss"]))
    assert math.isfinite(model.evaluate(make_dataset(x, y, batch_size=4, normalizer=norm, training=False,
                                                     channels=3), verbose=0))
