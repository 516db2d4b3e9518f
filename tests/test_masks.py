"""Lung masks found beside the images (COVID-19 Radiography Database layout or a masks/ mirror), resized, binary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hpstudy.data.masks import find_masks, load_masks, mask_candidates
from hpstudy.errors import DataError


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(tf.io.encode_png(array.astype(np.uint8)[..., None]).numpy()))
    return path


def test_masks_beside_images_and_in_a_mirror_folder(tmp_path: Path) -> None:
    square = np.zeros((8, 8))
    radiography = _png(tmp_path / "test/COVID/images/COVID-1.png", square)
    _png(tmp_path / "test/COVID/masks/COVID-1.png", square)
    direct = _png(tmp_path / "test/normal/n1.png", square)
    _png(tmp_path / "test/normal/masks/n1.png", square)
    mirrored = tmp_path / "test/normal/n2.jpg"
    mirrored.write_bytes(b"an image")
    _png(tmp_path / "masks/test/normal/n2.png", square)  # another suffix than the image
    lonely = _png(tmp_path / "test/normal/n3.png", square)
    found = find_masks([radiography, direct, mirrored, lonely], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() if p else None for p in found] == [
        "test/COVID/masks/COVID-1.png", "test/normal/masks/n1.png", "masks/test/normal/n2.png", None]
    candidates = [p.relative_to(tmp_path).as_posix() for p in mask_candidates(radiography, tmp_path)]
    assert candidates[0] == "test/COVID/masks/COVID-1.png" and "masks/test/COVID/COVID-1.png" in candidates


def test_load_masks_resizes_and_binarizes(tmp_path: Path) -> None:
    mask = np.zeros((8, 8))
    mask[:, :4] = 255  # the left half is lung
    path = _png(tmp_path / "m.png", mask)
    loaded = load_masks([path, path], image_size=(4, 4))
    assert loaded.shape == (2, 4, 4) and loaded.dtype == bool
    assert loaded[0, :, :2].all() and not loaded[0, :, 2:].any()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_masks([tmp_path / "bad.png"], image_size=(4, 4))
