"""Task 1, data exploration: counts, image sizes and channels, samples, pixel statistics,
normalization and augmentation, written as figures, ``stats.csv``/``stats.json`` and ``summary.md``.

Every statistic is computed by a pure function (``size_table``, ``channel_table``, ``pixel_stats``,
``pixel_maps``, ``intensity_histograms``, ``normalization_check``) and drawn by a separate private
function. Pixel statistics use the pipeline's own decoding (grayscale, resized, 0..255), so they describe
exactly what a model sees. The normalizer is fitted on the training split only and applied to
validation images, as in training. Nothing here trains or selects anything; the test split is only
described (counts, sizes, pixel statistics), never used to fit a statistic.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, atomic_write_json, atomic_write_text
from hpstudy.data.discover import SPLITS, DataSource, ImageRecord, discover, read_image
from hpstudy.data.leak import LEAK_COLUMNS, check_leaks
from hpstudy.data.settings import LEAK_SEVERITIES, Augmentation
from hpstudy.errors import ConfigError

__all__ = ["ExploreResult", "SHOWCASE_AUGMENTATION", "explore", "image_headers", "size_table", "channel_table",
           "pixel_stats", "pixel_maps", "intensity_histograms", "normalization_check"]

#: Ranges shown in ``augmentation.png``: the study defaults plus mild brightness and contrast changes.
SHOWCASE_AUGMENTATION = Augmentation(rotation=10.0, shift=0.1, zoom=0.1, brightness=0.1, contrast=0.1)
STATS_COLUMNS = ["split", "class_name", "n", "mean", "std", "min", "max"]
_DPI = 110
_BINS = 64
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PIL_MODES = {"L": "gray", "I": "gray", "LA": "gray+alpha", "P": "palette", "RGB": "RGB", "RGBA": "RGBA"}
_PNG_COLOR = {0: ("gray", 1), 2: ("RGB", 3), 3: ("palette", 3), 4: ("gray+alpha", 2), 6: ("RGBA", 4)}


@dataclass(frozen=True)
class ExploreResult:
    """What ``explore`` wrote: the folder, the statistics (as in ``stats.json``), figures, summary."""

    out_dir: Path
    stats: dict
    figures: dict[str, Path]
    summary: Path


def explore(data: str | Path | DataSource, *, out_dir: str | Path, image_size: tuple[int, int] = (128, 128),
            positive_class: str | None = None, seed: int = 0, n_samples: int = 6,
            leak_check: str = "warn", augmentation: Augmentation | None = None) -> ExploreResult:
    """Explore a data set and write figures, statistics and a Markdown summary into ``out_dir``.

    Args:
        data: a data folder or ``.zip`` (see ``discover``) or an already discovered ``DataSource``.
        out_dir: output folder (created); every file is written atomically.
        image_size: (height, width) the pixel statistics are computed at, as in training.
        positive_class: passed to ``discover`` when ``data`` is a path.
        seed: chooses the sample images, the validation image and the augmentation draws.
        n_samples: training images shown per class in ``samples.png``.
        leak_check: "warn", "error" or "off" (see ``check_leaks``); the pairs go to ``leaks.csv``.
        augmentation: ranges shown in ``augmentation.png`` (default ``SHOWCASE_AUGMENTATION``).

    Returns:
        An ``ExploreResult``.

    Raises:
        DataError: the data cannot be discovered or decoded. LeakError: leaks with ``leak_check="error"``.
        ConfigError: invalid arguments.
    """
    _check_arguments(image_size, n_samples, leak_check)
    source = data if isinstance(data, DataSource) else discover(data, positive_class=positive_class)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = (int(image_size[0]), int(image_size[1]))
    rng = np.random.default_rng(seed)
    figures: dict[str, Path] = {}

    leaks = check_leaks(source, severity=leak_check, out_csv=out / "leaks.csv")
    if leak_check == "off":
        atomic_write_text(out / "leaks.csv", pd.DataFrame(columns=LEAK_COLUMNS).to_csv(index=False))
    counts = source.counts()
    figures["counts"] = _plot_counts(counts, out / "counts.png")
    headers = image_headers(source.records)
    sizes = size_table(headers)
    if len(sizes) > 1:
        figures["sizes"] = _plot_sizes(headers, out / "sizes.png")
    else:
        (out / "sizes.png").unlink(missing_ok=True)  # stale from an earlier run on other data
    figures["samples"] = _plot_samples(_pick_samples(source, n_samples, rng), out / "samples.png")

    arrays = {split: _load(source.split(split), size, source.class_names) for split in SPLITS}
    names = dict(enumerate(source.class_names))  # y below indexes class_names (any number of classes)
    table = pd.concat([pixel_stats(x, y, split=s, names=names) for s, (x, y) in arrays.items()], ignore_index=True)
    x_train, y_train = arrays["train"]
    figures["mean_std_images"] = _plot_maps(pixel_maps(x_train, y_train, names=names), out / "mean_std_images.png")
    hists = {s: intensity_histograms(x, y, names=names) for s, (x, y) in arrays.items()}
    figures["histograms"] = _plot_histograms(hists, out / "histograms.png")
    val_index = int(rng.integers(len(arrays["val"][0])))
    norm = normalization_check(x_train, arrays["val"][0], index=val_index)
    norm["val_image"] = _relative(source.split("val")[val_index], source)
    figures["normalization"] = _plot_normalization(norm, out / "normalization.png")
    aug = augmentation or SHOWCASE_AUGMENTATION
    train_index = int(rng.integers(len(x_train)))
    figures["augmentation"] = _plot_augmentation(x_train[train_index], aug, seed, out / "augmentation.png")

    stats = _collect(source, size, seed, counts, headers, table, norm, aug, leaks, leak_check, figures)
    stats["augmentation"]["image"] = _relative(source.split("train")[train_index], source)
    atomic_write_text(out / "stats.csv", table[STATS_COLUMNS].to_csv(index=False))
    atomic_write_json(out / "stats.json", stats)
    summary = atomic_write_text(out / "summary.md", _summary_markdown(stats))
    return ExploreResult(out, stats, figures, summary)


def _check_arguments(image_size: Sequence[int], n_samples: int, leak_check: str) -> None:
    if (len(tuple(image_size)) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 8
                                            for v in image_size)):
        raise ConfigError(f"image_size must be two integers >= 8 (height, width), but got {image_size!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= 32:
        raise ConfigError(f"n_samples must be an integer in [1, 32], but got {n_samples!r}")
    if leak_check not in LEAK_SEVERITIES:
        raise ConfigError(f"leak_check must be one of {', '.join(LEAK_SEVERITIES)}, but got {leak_check!r}")


def _load(records: Sequence[ImageRecord], size: tuple[int, int],
          class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images as the pipeline decodes them, and the index of each image's class in ``class_names``."""
    from hpstudy.data.pipeline import load_split

    x, _ = load_split(records, image_size=size)
    return np.asarray(x, dtype=np.float32), np.array([class_names.index(r.class_name) for r in records])


def _moments(a: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(a, dtype=np.float64)), "std": float(np.std(a, dtype=np.float64))}


def _relative(record: ImageRecord, source: DataSource) -> str:
    return record.path.relative_to(source.root).as_posix()


# --- pure computations ------------------------------------------------------------------------

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
                         bins: int = _BINS) -> dict[str, np.ndarray]:
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



# --- figures ----------------------------------------------------------------------------------

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


def _plot_counts(counts: pd.DataFrame, path: Path) -> Path:
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


def _plot_sizes(headers: pd.DataFrame, path: Path) -> Path:
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


def _pick_samples(source: DataSource, n: int, rng: np.random.Generator) -> dict[str, list[ImageRecord]]:
    train = source.split("train")
    picks = {}
    for name in source.class_names:
        records = [r for r in train if r.class_name == name]
        chosen = rng.choice(len(records), size=min(n, len(records)), replace=False)
        picks[name] = [records[i] for i in sorted(chosen)]
    return picks


def _plot_samples(picks: Mapping[str, Sequence[ImageRecord]], path: Path) -> Path:
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


def _plot_maps(maps: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
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


def _plot_histograms(hists: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
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


def _plot_normalization(norm: Mapping[str, Any], path: Path) -> Path:
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
            ax.hist(values.ravel().astype(np.float64), bins=_BINS, density=True, color="C0" if col == 0 else "C1",
                    label="before" if col == 0 else "after")
            ax.axvline(centre, color="k", linestyle="--", label="train mean")
            ax.set(xlabel=label, ylabel="Density", title="Histogram " + ("before" if col == 0 else "after"))
            ax.legend()
        fig.suptitle(f"Normalizer fitted on TRAIN only (mean {norm['train_mean']:.1f}, std {norm['train_std']:.1f}) "
                     f"applied to a validation image")
        return _save(fig, path)


def _plot_augmentation(image: np.ndarray, aug: Augmentation, seed: int, path: Path) -> Path:
    views = [("Original", image)] + [(_transform_label(name, single), _augment(image, single, seed))
                                     for name, single in _transforms(aug).items()]
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


def _transforms(aug: Augmentation) -> dict[str, Augmentation]:
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


# --- statistics files -------------------------------------------------------------------------

def _collect(source: DataSource, size: tuple[int, int], seed: int, counts: pd.DataFrame, headers: pd.DataFrame,
             table: pd.DataFrame, norm: Mapping[str, Any], aug: Augmentation, leaks: pd.DataFrame,
             leak_check: str, figures: Mapping[str, Path]) -> dict[str, Any]:
    sizes, channels = size_table(headers), channel_table(headers)
    return {
        "data": {"origin": str(source.origin), "root": str(source.root), "class_names": list(source.class_names),
                 "positive_class": source.positive_class, "n_images": len(source.records),
                 "synthetic_phantom": (source.root / "phantom.json").is_file()},
        "image_size": list(size), "seed": seed,
        "counts": {s: {c: int(n) for c, n in g[["class_name", "count"]].itertuples(index=False)}
                   for s, g in counts.groupby("split", sort=False)},
        "sizes": {"uniform": len(sizes) == 1, "table": sizes.to_dict(orient="records")},
        "channels": channels.to_dict(orient="records"),
        "pixel_stats": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                        for row in table.to_dict(orient="records")],
        "normalization": {k: v for k, v in norm.items() if k not in ("before", "after")},
        "augmentation": {"ranges": aug.to_dict(), "transforms": list(_transforms(aug))},
        "leaks": {"severity": leak_check, "checked": leak_check != "off", "pairs": int(len(leaks)),
                  "exact": int((leaks["kind"] == "exact").sum()), "near": int((leaks["kind"] == "near").sum()),
                  "csv": "leaks.csv"},
        "figures": {name: p.name for name, p in figures.items()},
    }


def _md_table(frame: pd.DataFrame, digits: int = 1) -> str:
    cells = [[f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
             for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _summary_markdown(stats: Mapping[str, Any]) -> str:
    data, norm, leaks, figs = stats["data"], stats["normalization"], stats["leaks"], stats["figures"]
    counts = pd.DataFrame(stats["counts"]).T.rename_axis("split").reset_index()
    counts["total"] = counts[list(data["class_names"])].sum(axis=1)
    sizes = pd.DataFrame(stats["sizes"]["table"])
    size_text = (f"All {data['n_images']} images are {sizes['width'][0]}x{sizes['height'][0]} px."
                 if stats["sizes"]["uniform"] else f"{len(sizes)} different sizes (see `sizes.png`):\n\n"
                 + _md_table(sizes.head(15)))
    h, w = stats["image_size"]
    leak_text = ("not checked (leak_check: off)." if not leaks["checked"] else
                 f"{leaks['pairs']} cross-split pair(s) ({leaks['exact']} byte-identical, {leaks['near']} "
                 f"near-identical); see `leaks.csv`.")
    parts = [f"# Data exploration: `{Path(data['origin']).name}`", ""]
    if data["synthetic_phantom"]:
        parts += ["**SYNTHETIC PHANTOM, NOT X-RAYS**: generated by hpstudy for smoke tests.", ""]
    parts += [
        f"Classes: {', '.join(data['class_names'])} (positive: **{data['positive_class']}**); "
        f"{data['n_images']} images; seed {stats['seed']}.", "",
        "## Class counts", "", _md_table(counts), "", f"![Class counts]({figs['counts']})", "",
        "## Image sizes and channels", "", size_text, "", _md_table(pd.DataFrame(stats["channels"])), "",
        "## Samples", "", f"![Samples]({figs['samples']})", "",
        f"## Pixel statistics (grayscale, resized to {h}x{w}, 0-255)", "",
        _md_table(pd.DataFrame(stats["pixel_stats"])), "",
        f"![Per-pixel mean and std]({figs['mean_std_images']})", "", f"![Histograms]({figs['histograms']})", "",
        "## Normalization (fitted on train only)", "",
        f"Train mean {norm['train_mean']:.2f}, std {norm['train_std']:.2f}. Validation split before: mean "
        f"{norm['val_before']['mean']:.2f}, std {norm['val_before']['std']:.2f}; after: mean "
        f"{norm['val_after']['mean']:.3f}, std {norm['val_after']['std']:.3f}.", "",
        f"![Normalization]({figs['normalization']})", "",
        "## Augmentation (training batches only)", "",
        "Ranges: " + ", ".join(f"{k}={v}" for k, v in stats["augmentation"]["ranges"].items()) + ".", "",
        f"![Augmentation]({figs['augmentation']})", "",
        "## Leak check", "", "Images in more than one split: " + leak_text, "",
    ]
    if "sizes" in figs:
        parts.insert(parts.index(size_text) + 1, f"\n![Image sizes]({figs['sizes']})")
    return "\n".join(parts)
