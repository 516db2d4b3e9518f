"""Task 1 statistics as pure functions of images and arrays: headers, sizes, channels, pixel statistics,
mean/std maps, intensity histograms and the normalization check."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy.data.discover import ImageRecord, read_image

STATS_COLUMNS = ["split", "class_name", "n", "mean", "std", "min", "max"]
BINS = 64
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PIL_MODES = {"L": "gray", "I": "gray", "LA": "gray+alpha", "P": "palette", "RGB": "RGB", "RGBA": "RGBA"}
_PNG_COLOR = {0: ("gray", 1), 2: ("RGB", 3), 3: ("palette", 3), 4: ("gray+alpha", 2), 6: ("RGBA", 4)}


def image_headers(records: Sequence[ImageRecord]) -> pd.DataFrame:
    """Width, height, channels, bit depth and colour mode of each image, read from the file header.

    PNG headers are parsed directly (33 bytes); other formats are opened lazily with Pillow, and
    fully decoded only when that fails.

    Returns:
        Columns ``split, class_name, path, width, height, channels, bit_depth, mode``.
    """
    rows = [(r.split, r.class_name, str(r.path), *_header(r.path)) for r in records]
    return pd.DataFrame(rows, columns=["split", "class_name", "path", "width", "height", "channels",
                                       "bit_depth", "mode"])


def _header(path: Path) -> tuple[int, int, int, int, str]:
    with open(path, "rb") as handle:
        head = handle.read(33)
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
        width, height, depth, color = struct.unpack(">IIBB", head[16:26])
        mode, channels = _PNG_COLOR.get(color, (f"type {color}", 0))
        return width, height, channels, (8 if color == 3 else depth), mode
    try:
        from PIL import Image

        with Image.open(path) as image:
            depth = 16 if image.mode.startswith("I;16") else 8
            mode = _PIL_MODES.get(image.mode.split(";")[0], image.mode)
            return image.width, image.height, len(image.getbands()), depth, mode
    except Exception:  # noqa: BLE001 - any Pillow failure: fall back to a full decode
        array = read_image(path)
        return array.shape[1], array.shape[0], array.shape[2], array.dtype.itemsize * 8, f"{array.shape[2]} ch"


def size_table(records: Sequence[ImageRecord] | pd.DataFrame) -> pd.DataFrame:
    """Image sizes and how many images have each: columns ``width, height, count``, most frequent first.

    Args:
        records: image records, or the frame returned by ``image_headers`` (avoids re-reading headers).
    """
    headers = records if isinstance(records, pd.DataFrame) else image_headers(records)
    table = headers.groupby(["width", "height"]).size().reset_index(name="count")
    return table.sort_values(["count", "width", "height"], ascending=[False, True, True]).reset_index(drop=True)


def channel_table(records: Sequence[ImageRecord] | pd.DataFrame) -> pd.DataFrame:
    """Channel layouts: columns ``channels, bit_depth, mode, count``, most frequent first."""
    headers = records if isinstance(records, pd.DataFrame) else image_headers(records)
    table = headers.groupby(["channels", "bit_depth", "mode"]).size().reset_index(name="count")
    return table.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def pixel_stats(x: np.ndarray, y: np.ndarray, *, split: str, names: Mapping[int, str]) -> pd.DataFrame:
    """Global pixel statistics of one split: one row per class and one for all images (``all``).

    Args:
        x: images ``(N, H, W, C)`` on the 0..255 scale.
        y: integer labels ``(N,)``; ``names`` maps each label to its class name.
        split: split name written in the ``split`` column.

    Returns:
        Columns ``split, class_name, n, mean, std, min, max`` (mean and std over every pixel,
        accumulated in float64; NaN for a class without images).
    """
    groups = [(name, np.asarray(y) == k) for k, name in names.items()]
    groups.append(("all", np.ones(len(y), dtype=bool)))
    rows = []
    for name, mask in groups:
        part = np.asarray(x)[mask]
        if len(part) == 0:
            rows.append((split, name, 0, np.nan, np.nan, np.nan, np.nan))
            continue
        rows.append((split, name, int(len(part)), float(part.mean(dtype=np.float64)),
                     float(part.std(dtype=np.float64)), float(part.min()), float(part.max())))
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def pixel_maps(x: np.ndarray, y: np.ndarray, *, names: Mapping[int, str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-pixel mean and standard deviation images of each class: ``{class: {"mean", "std"}}`` (H, W)."""
    maps = {}
    for k, name in names.items():
        part = np.asarray(x)[np.asarray(y) == k].mean(axis=-1, dtype=np.float64)
        if len(part):
            maps[name] = {"mean": part.mean(axis=0), "std": part.std(axis=0)}
    return maps


def intensity_histograms(x: np.ndarray, y: np.ndarray, *, names: Mapping[int, str],
                         bins: int = BINS) -> dict[str, np.ndarray]:
    """Intensity densities on 0..255: ``{"edges": (bins+1,), "all": (bins,), <class>: (bins,)}``."""
    edges = np.linspace(0.0, 255.0, bins + 1)
    result = {"edges": edges, "all": np.histogram(x, bins=edges, density=True)[0]}
    for k, name in names.items():
        part = np.asarray(x)[np.asarray(y) == k]
        if len(part):
            result[name] = np.histogram(part, bins=edges, density=True)[0]
    return result


def normalization_check(x_train: np.ndarray, x_val: np.ndarray, *, index: int = 0) -> dict[str, Any]:
    """Fit the ``dataset`` normalizer on the training images only and apply it to validation images.

    Returns:
        ``normalizer`` (its ``to_dict``), ``train_mean``/``train_std`` (fitted values, 0..255 scale),
        ``val_before``/``val_after`` (mean, std of the whole validation split), ``image_before``/
        ``image_after`` (mean, std of validation image ``index``), ``index`` and the two images
        (``before``, ``after``, arrays (H, W, C)) for drawing.
    """
    from hpstudy.data.pipeline import Normalizer

    normalizer = Normalizer.fit("dataset", x_train)
    after = np.asarray(normalizer.apply(x_val), dtype=np.float32)
    return {"normalizer": normalizer.to_dict(), "fitted_on": "train",
            "train_mean": float(normalizer.mean), "train_std": float(normalizer.std),
            "val_before": _moments(x_val), "val_after": _moments(after), "index": int(index),
            "image_before": _moments(x_val[index]), "image_after": _moments(after[index]),
            "before": np.asarray(x_val[index]), "after": after[index]}


def _moments(a: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(a, dtype=np.float64)), "std": float(np.std(a, dtype=np.float64))}
