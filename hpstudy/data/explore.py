"""Task 1, data exploration: counts, image sizes and channels, samples, pixel statistics, normalization and
augmentation, written as figures, ``stats.csv``/``stats.json`` and ``summary.md``.

Every statistic is computed by a pure function (``size_table``, ``channel_table``, ``pixel_stats``,
``pixel_maps``, ``intensity_histograms``, ``normalization_check``: ``explore_stats``) and drawn by a
separate one (``explore_figures``); this module runs them and writes the files. Pixel statistics use the
pipeline's own decoding (grayscale, resized, 0..255), so they describe exactly what a model sees. The
normalizer is fitted on the training split only and applied to validation images, as in training. Nothing
here trains or selects anything; the test split is only described (counts, sizes, pixel statistics), never
used to fit a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_write_json, atomic_write_text
from hpstudy.config.settings import LEAK_SEVERITIES, Augmentation
from hpstudy.data.discover import SPLITS, DataSource, ImageRecord, discover
from hpstudy.data.explore_figures import (
    pick_samples,
    plot_augmentation,
    plot_counts,
    plot_histograms,
    plot_maps,
    plot_normalization,
    plot_samples,
    plot_sizes,
    showcase_transforms,
)
from hpstudy.data.explore_stats import (
    STATS_COLUMNS,
    channel_table,
    image_headers,
    intensity_histograms,
    normalization_check,
    pixel_maps,
    pixel_stats,
    size_table,
)
from hpstudy.data.leak import LEAK_COLUMNS, check_leaks
from hpstudy.errors import ConfigError

__all__ = ["ExploreResult", "SHOWCASE_AUGMENTATION", "explore", "image_headers", "size_table", "channel_table",
           "pixel_stats", "pixel_maps", "intensity_histograms", "normalization_check"]

#: Ranges shown in ``augmentation.png``: the study defaults plus mild brightness and contrast changes.
SHOWCASE_AUGMENTATION = Augmentation(rotation=10.0, shift=0.1, zoom=0.1, brightness=0.1, contrast=0.1)


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
    figures["counts"] = plot_counts(counts, out / "counts.png")
    headers = image_headers(source.records)
    sizes = size_table(headers)
    if len(sizes) > 1:
        figures["sizes"] = plot_sizes(headers, out / "sizes.png")
    else:
        (out / "sizes.png").unlink(missing_ok=True)  # stale from an earlier run on other data
    figures["samples"] = plot_samples(pick_samples(source, n_samples, rng), out / "samples.png")

    arrays = {split: _load(source.split(split), size, source.class_names) for split in SPLITS}
    names = dict(enumerate(source.class_names))  # y below indexes class_names (any number of classes)
    table = pd.concat([pixel_stats(x, y, split=s, names=names) for s, (x, y) in arrays.items()], ignore_index=True)
    x_train, y_train = arrays["train"]
    figures["mean_std_images"] = plot_maps(pixel_maps(x_train, y_train, names=names), out / "mean_std_images.png")
    hists = {s: intensity_histograms(x, y, names=names) for s, (x, y) in arrays.items()}
    figures["histograms"] = plot_histograms(hists, out / "histograms.png")
    val_index = int(rng.integers(len(arrays["val"][0])))
    norm = normalization_check(x_train, arrays["val"][0], index=val_index)
    norm["val_image"] = _relative(source.split("val")[val_index], source)
    figures["normalization"] = plot_normalization(norm, out / "normalization.png")
    aug = augmentation or SHOWCASE_AUGMENTATION
    train_index = int(rng.integers(len(x_train)))
    figures["augmentation"] = plot_augmentation(x_train[train_index], aug, seed, out / "augmentation.png")

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


def _relative(record: ImageRecord, source: DataSource) -> str:
    return record.path.relative_to(source.root).as_posix()


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
        "augmentation": {"ranges": aug.to_dict(), "transforms": list(showcase_transforms(aug))},
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
