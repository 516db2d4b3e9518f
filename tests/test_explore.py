"""Tests of the Task 1 exploration (hpstudy.data.explore) on the phantom, a mixed folder and real X-rays."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from hpstudy.data.discover import discover  # noqa: E402
from hpstudy.data.explore import (  # noqa: E402
    explore,
    intensity_histograms,
    pixel_maps,
    pixel_stats,
    size_table,
)
from hpstudy.data.phantom import make_phantom  # noqa: E402
from hpstudy.errors import ConfigError  # noqa: E402

XRAY_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "xray-sample"
ALWAYS = ["counts.png", "samples.png", "mean_std_images.png", "histograms.png", "normalization.png",
          "augmentation.png", "stats.csv", "stats.json", "leaks.csv", "summary.md"]


def _png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def _write_png(path: Path, image: np.ndarray) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def _check_outputs(out: Path, result, *, sizes: bool) -> None:  # noqa: ANN001
    for name in ALWAYS + (["sizes.png"] if sizes else []):
        assert (out / name).is_file(), name
    assert (out / "sizes.png").is_file() == sizes
    for name, path in result.figures.items():
        image = _png(path)
        assert image.shape[1] >= 400 and image.shape[0] >= 300, name
        assert f"({path.name})" in result.summary.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("explore")
    data = make_phantom(root / "phantom", n_train=6, n_val=3, n_test=3, size=32, seed=1)
    return data, explore(data, out_dir=root / "out", image_size=(32, 32), n_samples=3, seed=0)


def test_phantom_writes_every_file(phantom_run) -> None:  # noqa: ANN001
    data, result = phantom_run
    _check_outputs(result.out_dir, result, sizes=False)
    assert set(result.figures) == {"counts", "samples", "mean_std_images", "histograms", "normalization",
                                   "augmentation"}
    assert "SYNTHETIC PHANTOM" in result.summary.read_text()


def test_counts_sizes_and_channels_match_the_folder(phantom_run) -> None:  # noqa: ANN001
    data, result = phantom_run
    stats = json.loads((result.out_dir / "stats.json").read_text())
    for split in ("train", "val", "test"):
        for name in ("lesion", "normal"):
            assert stats["counts"][split][name] == len(list((data / split / name).glob("*.png")))
    assert stats["sizes"] == {"uniform": True, "table": [{"width": 32, "height": 32, "count": 24}]}
    assert stats["channels"] == [{"channels": 1, "bit_depth": 8, "mode": "gray", "count": 24}]
    assert stats["data"]["positive_class"] == "lesion" and stats["leaks"]["pairs"] == 0
    assert stats == json.loads(json.dumps(result.stats, default=str))


def test_pixel_stats_match_numpy(phantom_run) -> None:  # noqa: ANN001
    data, result = phantom_run
    table = pd.read_csv(result.out_dir / "stats.csv")
    assert list(table.columns) == ["split", "class_name", "n", "mean", "std", "min", "max"]
    for split in ("train", "val", "test"):
        pixels = {c: np.stack([_png(p) * 255.0 for p in sorted((data / split / c).glob("*.png"))])
                  for c in ("lesion", "normal")}
        pixels["all"] = np.concatenate([pixels["lesion"], pixels["normal"]])
        for name, x in pixels.items():
            row = table[(table["split"] == split) & (table["class_name"] == name)].iloc[0]
            assert row["n"] == len(x)
            np.testing.assert_allclose([row["mean"], row["std"], row["min"], row["max"]],
                                       [x.mean(), x.std(), x.min(), x.max()], rtol=1e-4, atol=1e-3)
    norm = result.stats["normalization"]
    train_all = table[(table["split"] == "train") & (table["class_name"] == "all")].iloc[0]
    assert norm["fitted_on"] == "train" and norm["train_mean"] == pytest.approx(train_all["mean"], rel=1e-6)
    assert abs(norm["val_after"]["mean"]) < 0.5 and norm["val_after"]["std"] == pytest.approx(
        norm["val_before"]["std"] / norm["train_std"], rel=1e-3)


def test_pure_statistics_on_tiny_arrays() -> None:
    x = np.array([[[[0.0], [2.0]]], [[[4.0], [6.0]]], [[[10.0], [10.0]]]])  # (3, 1, 2, 1)
    y = np.array([1, 1, 0])
    table = pixel_stats(x, y, split="train", names={1: "pos", 0: "neg"})
    assert table.to_dict(orient="list") == {
        "split": ["train"] * 3, "class_name": ["pos", "neg", "all"], "n": [2, 1, 3],
        "mean": [3.0, 10.0, 32 / 6], "std": [float(np.sqrt(5.0)), 0.0, float(np.std([0, 2, 4, 6, 10, 10]))],
        "min": [0.0, 10.0, 0.0], "max": [6.0, 10.0, 10.0]}
    maps = pixel_maps(x, y, names={1: "pos", 0: "neg"})
    np.testing.assert_allclose(maps["pos"]["mean"], [[2.0, 4.0]])
    np.testing.assert_allclose(maps["pos"]["std"], [[2.0, 2.0]])
    hist = intensity_histograms(x, y, names={1: "pos", 0: "neg"}, bins=5)
    width = 255 / 5
    assert hist["all"].sum() * width == pytest.approx(1.0) and hist["neg"][0] * width == pytest.approx(1.0)


def test_mixed_sizes_channels_and_a_leak(tmp_path: Path) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = {"train": [(40, 50, 1), (60, 60, 3), (40, 50, 1)], "val": [(30, 30, 1), (40, 50, 1)],
              "test": [(40, 50, 1), (80, 40, 1)]}
    for split, items in shapes.items():
        for name in ("a", "b", "c"):  # three classes, "a" positive
            for i, shape in enumerate(items):
                _write_png(tmp_path / "data" / split / name / f"{name}{i}.png",
                           rng.integers(0, 256, size=shape, dtype=np.uint8))
    deep = rng.integers(0, 65536, size=(40, 50, 1)).astype(np.uint16)
    _write_png(tmp_path / "data" / "train" / "a" / "deep.png", deep)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, size=(40, 50, 1), dtype=np.uint8)).numpy()
    (tmp_path / "data" / "val" / "b" / "photo.jpg").write_bytes(jpeg)
    leaked = (tmp_path / "data" / "train" / "b" / "b0.png").read_bytes()
    (tmp_path / "data" / "test" / "b" / "copy.png").write_bytes(leaked)
    table = size_table(discover(tmp_path / "data", positive_class="a").records)
    assert table.iloc[0].to_dict() == {"width": 50, "height": 40, "count": 15}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = explore(tmp_path / "data", out_dir=tmp_path / "out", image_size=(24, 24), positive_class="a",
                         n_samples=2)
    assert any("appear in more than one split" in str(w.message) for w in caught)
    _check_outputs(result.out_dir, result, sizes=True)
    stats = result.stats
    assert not stats["sizes"]["uniform"] and len(stats["sizes"]["table"]) == 4
    modes = {(c["channels"], c["bit_depth"], c["mode"]): c["count"] for c in stats["channels"]}
    assert modes == {(1, 8, "gray"): 20, (3, 8, "RGB"): 3, (1, 16, "gray"): 1}
    leaks = pd.read_csv(result.out_dir / "leaks.csv")
    assert len(leaks) == 1 and leaks["kind"][0] == "exact" and stats["leaks"]["exact"] == 1
    assert "4 different sizes" in result.summary.read_text()
    table = pd.read_csv(result.out_dir / "stats.csv")
    assert table[table["split"] == "train"]["class_name"].tolist() == ["a", "b", "c", "all"]
    assert table[table["split"] == "train"]["n"].tolist() == [4, 3, 3, 10]


def test_leak_check_off_and_bad_arguments(phantom_run, tmp_path: Path) -> None:  # noqa: ANN001
    data, _ = phantom_run
    with pytest.raises(ConfigError, match="n_samples must be an integer in"):
        explore(data, out_dir=tmp_path, n_samples=0)
    with pytest.raises(ConfigError, match="leak_check must be one of"):
        explore(data, out_dir=tmp_path, leak_check="maybe")
    with pytest.raises(ConfigError, match="image_size must be two integers"):
        explore(data, out_dir=tmp_path, image_size=(32,))


@pytest.mark.skipif(not XRAY_SAMPLE.is_dir(), reason=f"real X-ray sample not available at {XRAY_SAMPLE}")
def test_real_xray_sample(tmp_path: Path) -> None:
    result = explore(XRAY_SAMPLE, out_dir=tmp_path / "out", image_size=(64, 64), n_samples=4, leak_check="off")
    _check_outputs(result.out_dir, result, sizes=False)
    stats = result.stats
    for split in ("train", "val", "test"):
        for name in ("covid", "normal"):
            assert stats["counts"][split][name] == len(list((XRAY_SAMPLE / split / name).glob("*.png")))
    assert stats["data"]["positive_class"] == "covid" and stats["sizes"]["uniform"]
    assert list(pd.read_csv(result.out_dir / "leaks.csv").columns) == ["kind", "split_a", "path_a", "split_b",
                                                                      "path_b", "distance"]
    assert "Per-pixel mean" in (result.out_dir / "summary.md").read_text()
