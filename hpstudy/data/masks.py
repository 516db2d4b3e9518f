"""Lung masks shipped with a data set, found beside its images, for the in-lung Grad-CAM probe.

Two layouts are recognised, for an image ``<split>/<class>/[images/]<name>.<ext>`` of the data root:

* the COVID-19 Radiography Database's: ``<class>/masks/<name>.png`` beside ``<class>/images/<name>.png``
  (or beside images kept directly in the class folder);
* a ``masks/`` folder at the data root mirroring the splits: ``masks/<split>/<class>/<name>.png``.

A mask may have another image suffix than its image (``.png`` masks of ``.jpg`` images); the first
match in the order above wins. Masks are binary images: pixels above half the 8-bit range are lung.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpstudy.data.discover import IMAGE_SUFFIXES

__all__ = ["MASKS_FOLDER", "mask_candidates", "find_masks", "load_masks"]

MASKS_FOLDER = "masks"


def mask_candidates(image: Path, root: Path) -> list[Path]:
    """Where the mask of ``image`` (a file under the data ``root``) may be, first choice first, any suffix."""
    image, root = Path(image), Path(root)
    folders = []
    if image.parent.name == "images":
        folders.append(image.parent.parent / MASKS_FOLDER)
    folders.append(image.parent / MASKS_FOLDER)
    try:
        parts = [p for p in image.relative_to(root).parent.parts if p != "images"]
        folders.append(root.joinpath(MASKS_FOLDER, *parts))
    except ValueError:  # not under the root: only the neighbouring folders
        pass
    suffixes = [image.suffix] + [s for s in IMAGE_SUFFIXES if s != image.suffix.lower()]
    return [folder / f"{image.stem}{suffix}" for folder in folders for suffix in suffixes]


def find_masks(images: Sequence[Path], root: Path) -> list[Path | None]:
    """The mask file of each image, or None where there is none."""
    found: list[Path | None] = []
    for image in images:
        found.append(next((p for p in mask_candidates(image, root) if p.is_file()), None))
    return found


def load_masks(paths: Sequence[Path], *, image_size: tuple[int, int]) -> np.ndarray:
    """Decode masks, resize them to ``image_size`` (bilinear) and binarize: ``(N, H, W)`` bool.

    Raises:
        DataError: a mask file cannot be decoded (all bad files are listed).
    """
    from hpstudy.data.pipeline import load_images

    grey = load_images(list(paths), image_size=image_size)
    return grey[..., 0] > 127.5
