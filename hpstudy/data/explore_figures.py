"""Task 1 figures: class counts, sizes, samples, mean/std maps, histograms, the normalization check and
the augmentation showcase. Each ``plot_*`` writes one PNG atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path
from hpstudy.config.settings import Augmentation
from hpstudy.data.discover import SPLITS, DataSource, ImageRecord
from hpstudy.data.explore_stats import BINS, size_table

_DPI = 110


def _figure(width: float, height: float) -> Any:
    """A pyplot-free figure (no global registry, no GUI backend), closed by ``_save``."""
    from matplotlib.figure import Figure

    return Figure(figsize=(max(width, 8.0), max(height, 5.0)), dpi=_DPI)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=_DPI)
    finally:
        plt.close(fig)
    return path


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11,
                                  "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10})


def plot_counts(counts: pd.DataFrame, path: Path) -> Path:
    pivot = counts.pivot(index="split", columns="class_name", values="count").reindex(list(SPLITS))
    with _style():
        fig = _figure(9, 5.5)
        ax = fig.add_subplot()
        xs, width = np.arange(len(pivot)), 0.8 / len(pivot.columns)
        for i, name in enumerate(pivot.columns):
            bars = ax.bar(xs + (i - (len(pivot.columns) - 1) / 2) * width, pivot[name], width, label=name)
            ax.bar_label(bars, padding=2)
        ax.set_xticks(xs, [f"{s}\n(n = {int(pivot.loc[s].sum())})" for s in pivot.index])
        ax.set(xlabel="Split", ylabel="Number of images",
               title=f"Class distribution per split ({int(counts['count'].sum())} images)")
        ax.margins(y=0.12)
        ax.legend(title="Class")
        return _save(fig, path)


def plot_sizes(headers: pd.DataFrame, path: Path) -> Path:
    with _style():
        fig = _figure(11, 5)
        for i, (column, label) in enumerate([("width", "Width"), ("height", "Height")]):
            ax = fig.add_subplot(1, 2, i + 1)
            values = [headers.loc[headers["split"] == split, column].to_numpy() for split in SPLITS]
            low, high = int(headers[column].min()), int(headers[column].max())
            bins = np.linspace(low - 0.5, high + 0.5, min(30, high - low + 1) + 1)
            ax.hist(values, bins=bins, stacked=True, label=list(SPLITS), edgecolor="white", linewidth=0.5)
            ax.set(xlabel=f"{label} (pixels)", ylabel="Number of images",
                   title=f"Image {column}s as stored (stacked by split)")
            ax.legend(title="Split")
        fig.suptitle(f"Images come in {len(size_table(headers))} different sizes")
        return _save(fig, path)


def pick_samples(source: DataSource, n: int, rng: np.random.Generator) -> dict[str, list[ImageRecord]]:
    train = source.split("train")
    picks = {}
    for name in source.class_names:
        records = [r for r in train if r.class_name == name]
        chosen = rng.choice(len(records), size=min(n, len(records)), replace=False)
        picks[name] = [records[i] for i in sorted(chosen)]
    return picks


def plot_samples(picks: Mapping[str, Sequence[ImageRecord]], path: Path) -> Path:
    from hpstudy.data.pipeline import decode_image

    cols = max(len(r) for r in picks.values())
    with _style():
        fig = _figure(2.1 * cols, 2.5 * len(picks) + 0.6)
        for row, (name, records) in enumerate(picks.items()):
            for col, record in enumerate(records):
                ax = fig.add_subplot(len(picks), cols, row * cols + col + 1)
                image = np.asarray(decode_image(record.path, image_size=None))[..., 0]
                ax.imshow(image, cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{_short(record.path.name)}\n{image.shape[1]}x{image.shape[0]} px", fontsize=10)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(name, fontsize=12)
        fig.suptitle("Random training images per class (grayscale 0-255, not normalized)")
        return _save(fig, path)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def plot_maps(maps: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
    # One colour scale per statistic, shared by the classes, so that their maps can be compared.
    limits = {kind: (min(float(m[kind].min()) for m in maps.values()), max(float(m[kind].max()) for m in maps.values()))
              for kind in ("mean", "std")}
    with _style():
        fig = _figure(10, 4.2 * len(maps) + 0.5)
        for row, (name, images) in enumerate(maps.items()):
            for col, kind in enumerate(("mean", "std")):
                ax = fig.add_subplot(len(maps), 2, 2 * row + col + 1)
                shown = ax.imshow(images[kind], cmap="gray" if kind == "mean" else "magma",
                                  vmin=limits[kind][0], vmax=limits[kind][1])
                title = "Per-pixel mean" if kind == "mean" else "Per-pixel std"
                ax.set_title(f"{title} (train, {name})")
                ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
                fig.colorbar(shown, ax=ax, label="Pixel intensity (0-255)")
        height, width = next(iter(maps.values()))["mean"].shape
        fig.suptitle(f"Training images per class, grayscale resized to {height}x{width} (shared colour scales)")
        return _save(fig, path)


def plot_histograms(hists: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
    with _style():
        fig = _figure(5 * len(hists), 5)
        first = None
        for i, (split, hist) in enumerate(hists.items()):
            ax = fig.add_subplot(1, len(hists), i + 1, sharey=first)
            first = first or ax
            centers = (hist["edges"][:-1] + hist["edges"][1:]) / 2
            for name, density in hist.items():
                if name not in ("edges", "all"):
                    ax.plot(centers, density, label=name, linewidth=1.6)
            ax.plot(centers, hist["all"], "k--", label="all classes", linewidth=1.2)
            ax.set(xlabel="Pixel intensity (0-255)", ylabel="Density", title=f"Intensity histogram ({split})",
                   xlim=(0, 255))
            ax.legend(title="Class")
        fig.suptitle("Pixel intensities after grayscale conversion and resizing")
        return _save(fig, path)


def plot_normalization(norm: Mapping[str, Any], path: Path) -> Path:
    before, after = norm["before"][..., 0], norm["after"][..., 0]
    b, a = norm["image_before"], norm["image_after"]
    with _style():
        fig = _figure(11, 8.5)
        ax = fig.add_subplot(2, 2, 1)
        fig.colorbar(ax.imshow(before, cmap="gray", vmin=0, vmax=255), ax=ax, label="Pixel intensity (0-255)")
        ax.set(title=f"Validation image before\nmean {b['mean']:.1f}, std {b['std']:.1f}", xlabel="x (pixels)",
               ylabel="y (pixels)")
        ax = fig.add_subplot(2, 2, 2)
        fig.colorbar(ax.imshow(after, cmap="gray"), ax=ax, label="Normalized value")
        ax.set(title=f"After 'dataset' normalization (same picture, new scale)\nmean {a['mean']:.2f}, "
                     f"std {a['std']:.2f}", xlabel="x (pixels)", ylabel="y (pixels)")
        for col, (values, label, centre) in enumerate([(before, "Pixel intensity (0-255)", norm["train_mean"]),
                                                       (after, "Normalized value (x - mean_train) / std_train", 0.0)]):
            ax = fig.add_subplot(2, 2, 3 + col)
            # float64: numpy cannot split a float32 range of a few ulps (near-constant images) into bins
            ax.hist(values.ravel().astype(np.float64), bins=BINS, density=True, color="C0" if col == 0 else "C1",
                    label="before" if col == 0 else "after")
            ax.axvline(centre, color="k", linestyle="--", label="train mean")
            ax.set(xlabel=label, ylabel="Density", title="Histogram " + ("before" if col == 0 else "after"))
            ax.legend()
        fig.suptitle(f"Normalizer fitted on TRAIN only (mean {norm['train_mean']:.1f}, std {norm['train_std']:.1f}) "
                     f"applied to a validation image")
        return _save(fig, path)


def plot_augmentation(image: np.ndarray, aug: Augmentation, seed: int, path: Path) -> Path:
    views = [("Original", image)] + [(_transform_label(name, single), _augment(image, single, seed))
                                     for name, single in showcase_transforms(aug).items()]
    cols = min(4, len(views))
    rows = -(-len(views) // cols)
    with _style():
        fig = _figure(3.2 * cols, 3.4 * rows + 0.5)
        for i, (title, view) in enumerate(views):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(view[..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("Augmentation of one training image (one random draw per transform, training batches only)")
        return _save(fig, path)


def showcase_transforms(aug: Augmentation) -> dict[str, Augmentation]:
    from hpstudy.data.pipeline import single_transforms

    return dict(single_transforms(aug))


def _augment(image: np.ndarray, aug: Augmentation, seed: int) -> np.ndarray:
    import tensorflow as tf

    from hpstudy.data.pipeline import make_augmenter

    augmenter = make_augmenter(aug, seed=seed)
    if augmenter is None:
        return image
    out = augmenter(tf.convert_to_tensor(image[None], dtype=tf.float32))
    return np.clip(np.asarray(out)[0], 0, 255)


def _transform_label(name: str, aug: Augmentation) -> str:
    if name == "combined":
        return "All combined"
    value = getattr(aug, name, None)
    text = {"rotation": f"±{value:g}°", "shift": f"±{100 * (value or 0):g} % of size",
            "zoom": f"±{100 * (value or 0):g} %", "brightness": f"±{100 * (value or 0):g} % of 255",
            "contrast": f"x{1 - (value or 0):g}-{1 + (value or 0):g}", "horizontal_flip": "random mirror"}
    return f"{name.replace('_', ' ')} {text.get(name, '')}".strip()


