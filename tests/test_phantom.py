"""Tests of the synthetic phantom generator (hpstudy.data.phantom)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hpstudy.data.phantom import PHANTOM_CLASSES, PhantomSpec, lesion_boxes, make_phantom, marker_box  # noqa: E402
from hpstudy.errors import DataError  # noqa: E402

SMALL = dict(n_train=4, n_val=2, n_test=2, size=32, seed=3)


def _read_png(path: Path) -> np.ndarray:
    import tensorflow as tf

    return tf.io.decode_png(path.read_bytes()).numpy()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("ph") / "phantom", **SMALL)


def test_layout_and_counts(phantom: Path) -> None:
    for split, n in {"train": 4, "val": 2, "test": 2}.items():
        for name in PHANTOM_CLASSES:
            files = sorted((phantom / split / name).glob("*.png"))
            assert [f.name for f in files] == [f"phantom_{i:04d}.png" for i in range(n)]
    assert {p.name for p in phantom.iterdir()} == {"train", "val", "test", "README.txt", "lesions.json", "phantom.json"}
    image = _read_png(phantom / "train" / "normal" / "phantom_0000.png")
    assert image.shape == (32, 32, 1) and image.dtype == np.uint8


def test_readme_says_synthetic(phantom: Path) -> None:
    text = (phantom / "README.txt").read_text()
    assert "SYNTHETIC PHANTOM, NOT X-RAYS" in text and "hpstudy" in text and "Grad-CAM" in text


def test_deterministic_for_a_seed(phantom: Path, tmp_path: Path) -> None:
    again = make_phantom(tmp_path / "again", **SMALL)
    assert _files(again) == _files(phantom)
    other = make_phantom(tmp_path / "other", **{**SMALL, "seed": 4})
    assert _files(other)["train/lesion/phantom_0000.png"] != _files(phantom)["train/lesion/phantom_0000.png"]


def test_idempotent_and_replaces_other_parameters(tmp_path: Path) -> None:
    out = make_phantom(tmp_path / "p", **SMALL)
    stamp = (out / "train" / "lesion" / "phantom_0000.png").stat().st_mtime_ns
    assert make_phantom(out, **SMALL) == out
    assert (out / "train" / "lesion" / "phantom_0000.png").stat().st_mtime_ns == stamp
    make_phantom(out, **{**SMALL, "n_train": 5})
    assert len(list((out / "train" / "normal").glob("*.png"))) == 5
    assert json.loads((out / "phantom.json").read_text())["n_train"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folders left behind


def test_refuses_a_foreign_folder_and_bad_parameters(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        make_phantom(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="n_val must be an integer >= 1"):
        PhantomSpec(n_val=0)
    with pytest.raises(DataError, match="size must be an integer >= 16"):
        make_phantom(tmp_path / "x", size=8)


def test_lesion_boxes_inside_and_bright(phantom: Path) -> None:
    boxes = lesion_boxes(phantom)
    lesions = sorted(p.relative_to(phantom).as_posix() for p in phantom.rglob("lesion/*.png"))
    assert sorted(boxes) == lesions
    normals = sorted(phantom.rglob("normal/*.png"))
    for rel, (y0, x0, y1, x1) in boxes.items():
        assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32
        assert 4 <= y1 - y0 <= 12  # radius about size / 10
        inside = _read_png(phantom / rel)[y0:y1, x0:x1].mean()
        normal = np.mean([_read_png(p)[y0:y1, x0:x1].mean() for p in normals])
        assert inside > normal + 20, rel
        assert _read_png(phantom / rel).max() > 180


def test_lesion_boxes_needs_a_phantom(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lesions.json is missing"):
        lesion_boxes(tmp_path)


def test_fast_enough(tmp_path: Path) -> None:
    make_phantom(tmp_path / "warm", n_train=1, n_val=1, n_test=1, size=16)  # TensorFlow import
    start = time.perf_counter()
    make_phantom(tmp_path / "p", n_train=60, n_val=20, n_test=20, size=64)
    assert time.perf_counter() - start < 2.0


def test_discover_reads_the_phantom(phantom: Path) -> None:
    discover = pytest.importorskip("hpstudy.data.discover").discover
    source = discover(phantom, positive_class="lesion")
    assert source.positive_class == "lesion"
    assert set(source.class_names) == set(PHANTOM_CLASSES)
    counts = source.counts()
    assert int(counts["count"].sum()) == 2 * (4 + 2 + 2)
    assert all(r.label == int(r.class_name == "lesion") for r in source.records)


def test_planted_marker_on_positives_only_and_a_faint_lesion(phantom: Path, tmp_path: Path) -> None:
    marked = make_phantom(tmp_path / "marked", **SMALL, marker=True, lesion=0.0)
    y0, x0, y1, x1 = marker_box(32)
    assert (y0, x0, y1, x1) == (1, 1, 4, 4) and x1 / 32 <= 0.125  # inside a 10-15 % border band
    params = json.loads((marked / "phantom.json").read_text())
    assert params["marker"] == [1, 1, 4, 4] and params["lesion"] == 0.0
    assert "marker" not in json.loads((phantom / "phantom.json").read_text())  # plain phantoms unchanged
    for split in ("train", "test"):
        positive = _read_png(marked / split / "lesion" / "phantom_0000.png")[..., 0]
        negative = _read_png(marked / split / "normal" / "phantom_0000.png")[..., 0]
        assert positive[y0:y1, x0:x1].min() > 180 and negative[y0:y1, x0:x1].max() < 100
        plain = _read_png(phantom / split / "lesion" / "phantom_0000.png")[..., 0]
        box = lesion_boxes(phantom)[f"{split}/lesion/phantom_0000.png"]
        inside = (slice(box[0], box[2]), slice(box[1], box[3]))
        assert positive[inside].mean() < plain[inside].mean() - 20  # no blob: darker where the plain one has it
    assert lesion_boxes(marked) == {}
    with pytest.raises(DataError, match=r"lesion contrast must be a number in \[0, 1\]"):
        make_phantom(tmp_path / "bad", **SMALL, lesion=2.0)
