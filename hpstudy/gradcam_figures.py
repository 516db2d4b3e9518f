"""Grad-CAM overlays and figures: the maps of ``hpstudy.gradcam`` drawn on the images they explain.

Images are shown on their original intensity scale (0..255 as hpstudy loads them; no per-image min-max
stretch, so the same grey means the same pixel value in every panel), and the heat map is blended in by
rescaling the sum instead of clipping it. An empty map (``gradcam.empty_maps``) is said so in its title.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from hpstudy._io import atomic_path
from hpstudy.gradcam import empty_maps, resize_heatmap

__all__ = ["overlay", "plot_gradcam_grid"]


def _display(image: np.ndarray, value_range: tuple[float, float] = (0.0, 255.0)) -> np.ndarray:
    """An image ``(H, W)`` or ``(H, W, 1|3)`` as RGB in ``[0, 1]`` on its original intensity scale.

    ``value_range`` (low, high) maps linearly to 0..1 (values outside are clipped): the same pixel value
    looks the same in every image, with no per-image min-max stretch.
    """
    image = np.asarray(image, dtype="float32")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 1|3), got shape {image.shape}")
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.4, colormap: str = "jet",
            value_range: tuple[float, float] = (0.0, 255.0)) -> np.ndarray:
    """Superimpose a heat map on an image: ``(image + alpha * colormap(heat)) / (1 + alpha)``.

    The image keeps its original intensity scale (``value_range`` -> 0..1, no per-image stretch) and the
    blended sum is rescaled by the largest value it can take, ``1 + alpha``, instead of clipped at 1 (which
    saturated about half the pixels of an X-ray): no pixel saturates unless both the image and the colour
    channel are at their maximum, and the image's contrast is kept.

    Args:
        image: ``(H, W)`` or ``(H, W, 1|3)`` on ``value_range`` (default 0..255, how hpstudy loads images).
        heat: ``(h, w)`` map in ``[0, 1]``; bilinearly resized to ``(H, W)``.
        alpha: weight of the coloured heat map (>= 0).
        colormap: a Matplotlib colormap name.
        value_range: the image values shown as black and white.

    Returns:
        ``(H, W, 3)`` float32 RGB in ``[0, 1]``.

    Raises:
        ValueError: bad image or heat shape, negative alpha, bad value_range, or unknown colormap.
    """
    rgb = _display(image, value_range)
    heat = np.asarray(heat, dtype="float32")
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map (h, w), got shape {heat.shape}")
    if colormap not in colormaps:
        raise ValueError(f"unknown colormap {colormap!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    coloured = colormaps[colormap](resize_heatmap(heat, rgb.shape[:2]))[..., :3]
    return ((rgb + alpha * coloured) / (1.0 + alpha)).astype("float32")


def plot_gradcam_grid(images: np.ndarray, maps: np.ndarray, titles: Sequence[str], path: str | os.PathLike[str],
                      *, suptitle: str, alpha: float = 0.4) -> Path:
    """Draw rows of (image, Grad-CAM overlay) pairs and save them atomically.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, 1|3)`` images on 0..255 as loaded (not normalized).
        maps: ``(N, h, w)`` maps in ``[0, 1]``, e.g. from ``heatmap``.
        titles: one title per image.
        path: the PNG (or other Matplotlib format) to write.
        suptitle: the figure title.
        alpha: weight of the heat map in the overlay.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: lengths differ or there is nothing to draw.
    """
    images, maps = np.asarray(images), np.asarray(maps)
    if not len(images) == len(maps) == len(titles) or len(images) == 0:
        raise ValueError(f"need as many images, maps and titles (at least one), got "
                         f"{len(images)}, {len(maps)}, {len(titles)}")
    pairs_per_row = min(len(images), 2)
    rows = math.ceil(len(images) / pairs_per_row)
    fig = Figure(figsize=(max(5.6 * pairs_per_row, 9.0), 2.9 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, 2 * pairs_per_row, squeeze=False).reshape(-1, 2)
    empty = empty_maps(maps) if maps.ndim == 3 else np.zeros(len(maps), bool)
    for (left, right), image, heat, title, flat in zip(axes, images, maps, titles, empty):
        left.imshow(_display(image), vmin=0.0, vmax=1.0)
        left.set_title(title, fontsize=9)
        right.imshow(overlay(image, heat, alpha=alpha), vmin=0.0, vmax=1.0)
        right.set_title("Grad-CAM: empty map (no positive evidence), flagged" if flat else "Grad-CAM", fontsize=9)
    for ax in axes.reshape(-1):
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes.reshape(-1).tolist(), shrink=0.6,
                 label="Grad-CAM importance (normalized)")
    if empty.any():
        suptitle += f" [{int(empty.sum())} of {len(empty)} map(s) empty: flagged]"
    fig.suptitle("\n".join(textwrap.wrap(suptitle, width=90)), fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return Path(path)
