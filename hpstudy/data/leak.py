"""Images that appear in more than one split: byte-identical copies and near-identical re-encodings.

Exact pairs share the SHA-1 of their bytes. Near pairs are found with a DCT perceptual hash
(pHash): grayscale, area-resize to a 64x64 thumbnail, 2-D DCT, keep the 16x16 lowest frequencies,
one bit per coefficient (above the median or not): 256 bits. Near means a Hamming distance
<= ``near_threshold`` (default 16 of 256 bits) between images of different splits.

Why this hash and threshold: chest X-rays look alike, so small hashes collide. Measured on the
2,200 real images of ``xray-course`` (no near-duplicates by construction): an 8x8 average hash
flags 1,177 cross-split pairs at distance <= 4 and a 64-bit pHash 12, while the 256-bit pHash puts
every pair of distinct images >= 34 bits apart. The same image resized to 200 or 1024 px and
re-encoded (JPEG quality 75 or PNG), saved as 16-bit grayscale or lightly noised stays within 6 bits;
shrunk to 64 px at JPEG quality 50, or with its gamma changed, 95 % stay within 16 bits (all within
24). Threshold 16 sits well inside that gap. Crops and flips are not caught.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hpstudy._io import atomic_write_text
from hpstudy.config.settings import LEAK_SEVERITIES
from hpstudy.data.discover import SPLITS, DataSource, ImageRecord, file_sha1, read_image
from hpstudy.errors import ConfigError, LeakError

__all__ = ["LEAK_COLUMNS", "DEFAULT_NEAR_THRESHOLD", "LeakWarning", "perceptual_hash", "average_hash",
           "find_leaks", "check_leaks", "find_external_leaks", "check_external_leaks"]

LEAK_COLUMNS = ["kind", "split_a", "path_a", "split_b", "path_b", "distance"]
HASH_SIZE = 16
DEFAULT_NEAR_THRESHOLD = 16
_SHOWN_PAIRS = 5
_BLOCK = 1024  # rows of the distance matrix computed at once


class LeakWarning(UserWarning):
    """Images appear in more than one split and the leak check severity is ``warn``."""


def perceptual_hash(image: np.ndarray, *, hash_size: int = HASH_SIZE) -> int:
    """DCT perceptual hash of an image as an integer of ``hash_size**2`` bits.

    Args:
        image: ``H x W x C`` array (uint8, uint16 or float in [0, 1]); C in 1..4, alpha ignored.
        hash_size: side of the block of lowest DCT frequencies kept (thumbnail side is 4x that).

    Returns:
        The hash; compare two hashes with ``(a ^ b).bit_count()``.
    """
    return _to_int(_phash_bits(image, hash_size))


def average_hash(image: np.ndarray, hash_size: int = 8) -> int:
    """Average hash: bits of a ``hash_size x hash_size`` grayscale thumbnail above its mean.

    Simpler than ``perceptual_hash`` but too coarse for chest X-rays (see the module docstring);
    kept for comparison.
    """
    thumb = _thumbnail(_grayscale(image), hash_size)
    return _to_int((thumb > thumb.mean()).ravel())


def find_leaks(source: DataSource, *, near_threshold: int = DEFAULT_NEAR_THRESHOLD,
               splits: Iterable[str] | None = None) -> pd.DataFrame:
    """Pairs of images from different splits that are byte-identical or near-identical.

    Args:
        source: discovered data.
        near_threshold: largest Hamming distance (of 256 bits) still called "near".
        splits: compare only these splits (default all), e.g. ``("train", "val")`` to keep test unread.

    Returns:
        A frame with ``LEAK_COLUMNS``: kind ("exact" or "near"), the two splits in ``SPLITS``
        order, paths relative to ``source.root`` and the hash distance (0 for exact pairs);
        sorted by kind, splits and paths.

    Raises:
        DataError: an image cannot be read or decoded.
    """
    if isinstance(near_threshold, bool) or not isinstance(near_threshold, int) or near_threshold < 0:
        raise ConfigError(f"near_threshold must be an integer >= 0, but got {near_threshold!r}")
    records = [r for s in (SPLITS if splits is None else splits) for r in source.split(s)]
    if not records:
        return _frame([])
    shas = [file_sha1(r.path) for r in records]
    bits = np.stack([_phash_bits(read_image(r.path), HASH_SIZE) for r in records])
    rows = []
    # identical bytes decode to identical hashes (distance 0), so exact pairs are among the close ones
    for i, j, distance in _close_pairs(records, bits, near_threshold):
        kind = "exact" if shas[i] == shas[j] else "near"
        rows.append((kind, records[i].split, _relative(records[i], source), records[j].split,
                     _relative(records[j], source), 0 if kind == "exact" else distance))
    return _frame(rows)


def check_leaks(source: DataSource, *, severity: str = "warn", out_csv: str | Path | None = None,
                near_threshold: int = DEFAULT_NEAR_THRESHOLD, splits: Iterable[str] | None = None,
                reuse: bool = False) -> pd.DataFrame:
    """Find cross-split leaks, save them, and warn or fail according to ``severity``.

    Args:
        source: discovered data.
        severity: "warn" (``LeakWarning``), "error" (``LeakError``) or "off" (no work, empty frame).
        out_csv: where the leak table is written atomically, header included even when empty.
        near_threshold: see ``find_leaks``.
        splits: see ``find_leaks``.
        reuse: read the pairs from an existing ``out_csv`` instead of searching again (the caller vouches
            that the images are those it was written for, e.g. by their fingerprint); they are still
            reported as ``severity`` says.

    Returns:
        The ``find_leaks`` frame (empty when severity is "off").

    Raises:
        ConfigError: unknown severity.
        LeakError: leaks found and severity is "error".
    """
    def find() -> pd.DataFrame:
        known = _read_pairs(out_csv) if reuse and out_csv is not None else None
        return known if known is not None else find_leaks(source, near_threshold=near_threshold, splits=splits)

    return _checked(severity, find, out_csv, what="appear in more than one split", remedy="remove or move these images")


def _read_pairs(path: str | Path) -> pd.DataFrame | None:
    """A leak table written by ``check_leaks`` (None when missing or not one)."""
    try:
        table = pd.read_csv(path, dtype={"distance": "int64"})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    return table if list(table.columns) == list(LEAK_COLUMNS) else None


def find_external_leaks(source: DataSource, external: DataSource, *, name: str,
                        near_threshold: int = DEFAULT_NEAR_THRESHOLD) -> pd.DataFrame:
    """Pairs of a study image (any split) and an external image that are byte-identical or near-identical.

    Returns:
        A ``LEAK_COLUMNS`` frame as ``find_leaks``: ``split_a``/``path_a`` the study's image, ``split_b`` the
        external set's ``name`` and ``path_b`` its image (relative to ``external.root``).
    """
    ours, theirs = list(source.records), list(external.records)
    if not ours or not theirs:
        return _frame([])
    bits = [np.stack([_phash_bits(read_image(r.path), HASH_SIZE) for r in group]) for group in (ours, theirs)]
    rows = []
    for i, j, distance in _cross_pairs(*bits, near_threshold):
        exact = file_sha1(ours[i].path) == file_sha1(theirs[j].path)
        rows.append(("exact" if exact else "near", ours[i].split, _relative(ours[i], source), name,
                     _relative(theirs[j], external), 0 if exact else distance))
    return _frame(rows)


def check_external_leaks(source: DataSource, external: DataSource, *, name: str, severity: str = "warn",
                         out_csv: str | Path | None = None,
                         near_threshold: int = DEFAULT_NEAR_THRESHOLD) -> pd.DataFrame:
    """``find_external_leaks``, saved to ``out_csv``, then a warning or an error as ``check_leaks`` does.

    Raises:
        ConfigError: unknown severity.
        LeakError: leaks found and severity is "error".
    """
    return _checked(severity, lambda: find_external_leaks(source, external, name=name, near_threshold=near_threshold),
                    out_csv, what=f"are shared between the study's splits and the external set {name!r}",
                    remedy="remove them from the external set")


def _checked(severity: str, find: Callable[[], pd.DataFrame], out_csv: str | Path | None, *, what: str,
             remedy: str) -> pd.DataFrame:
    """Run ``find`` unless ``severity`` is "off", save its pairs to ``out_csv``, then warn or raise."""
    if severity not in LEAK_SEVERITIES:
        raise ConfigError(f"leak_check must be one of {', '.join(LEAK_SEVERITIES)}, but got {severity!r}")
    if severity == "off":
        return _frame([])
    leaks = find()
    if out_csv is not None:
        atomic_write_text(out_csv, leaks.to_csv(index=False))
    if len(leaks) and severity == "error":
        raise LeakError(f"{_summary(leaks, out_csv, what)}; {remedy} (or set leak_check: warn)")
    if len(leaks):
        warnings.warn(_summary(leaks, out_csv, what), LeakWarning, stacklevel=4)  # the caller of check_*
    return leaks


def _summary(leaks: pd.DataFrame, out_csv: str | Path | None, what: str = "appear in more than one split") -> str:
    exact = int((leaks["kind"] == "exact").sum())
    shown = [f"{r.path_a} = {r.path_b}" if r.kind == "exact" else f"{r.path_a} ~ {r.path_b} (distance {r.distance})"
             for r in leaks.head(_SHOWN_PAIRS).itertuples()]
    more = f", and {len(leaks) - len(shown)} more" if len(leaks) > len(shown) else ""
    where = f"; all pairs in {out_csv}" if out_csv is not None else ""
    return (f"{len(leaks)} image pair(s) {what} ({exact} byte-identical, "
            f"{len(leaks) - exact} near-identical): {'; '.join(shown)}{more}{where}")


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=LEAK_COLUMNS).astype({"distance": "int64"})
    order = {s: i for i, s in enumerate(SPLITS)}
    keys = frame.assign(a=frame["split_a"].map(order), b=frame["split_b"].map(order))
    keys = keys.sort_values(["kind", "a", "path_a", "b", "path_b"], kind="stable")
    return frame.loc[keys.index].reset_index(drop=True)


def _relative(record: ImageRecord, source: DataSource) -> str:
    return record.path.relative_to(source.root).as_posix()


def _close_pairs(records: Sequence[ImageRecord], bits: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Index pairs (i in an earlier split than j) whose hash distance is <= threshold."""
    signs = bits.astype(np.float32) * 2 - 1  # Hamming distance = (n_bits - signs_a . signs_b) / 2
    split_of = np.array([SPLITS.index(r.split) for r in records])
    pairs = []
    for a in range(len(SPLITS)):
        rows = np.flatnonzero(split_of == a)
        cols = np.flatnonzero(split_of > a)
        for start in range(0, len(rows), _BLOCK):
            block = rows[start:start + _BLOCK]
            distance = np.rint((bits.shape[1] - signs[block] @ signs[cols].T) / 2).astype(np.int64)
            for i, j in zip(*np.nonzero(distance <= threshold)):
                pairs.append((int(block[i]), int(cols[j]), int(distance[i, j])))
    return pairs


def _cross_pairs(ours: np.ndarray, theirs: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Index pairs (i of ``ours``, j of ``theirs``) whose hash distance is <= threshold."""
    signs_a, signs_b = (bits.astype(np.float32) * 2 - 1 for bits in (ours, theirs))
    pairs = []
    for start in range(0, len(ours), _BLOCK):
        distance = np.rint((ours.shape[1] - signs_a[start:start + _BLOCK] @ signs_b.T) / 2).astype(np.int64)
        pairs.extend((start + int(i), int(j), int(distance[i, j])) for i, j in zip(*np.nonzero(distance <= threshold)))
    return pairs


def _grayscale(image: np.ndarray) -> np.ndarray:
    """2-D float32 in [0, 1]: luma of RGB(A), the first channel otherwise."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
    pixels = np.asarray(image, dtype=np.float32) / scale
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] >= 3:
        return pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return pixels[..., 0]


def _thumbnail(gray: np.ndarray, side: int) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize(gray[..., None], (side, side), method="area").numpy()[..., 0].astype(np.float64)


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


def _phash_bits(image: np.ndarray, hash_size: int) -> np.ndarray:
    side = 4 * hash_size
    basis = _dct_matrix(side)
    low = (basis @ _thumbnail(_grayscale(image), side) @ basis.T)[:hash_size, :hash_size].ravel()
    return low > np.median(low)


def _to_int(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits), 2)
