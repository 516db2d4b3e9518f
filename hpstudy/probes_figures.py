"""The figure of the shortcut probes (``hpstudy.probes``): the regions, the occlusion AUCs, the mass shares.

Drawn from the ``probes.json`` record alone (plus one test image to show the regions on), after the record
is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hpstudy._io import atomic_path, write_problem
from hpstudy.errors import StudyError
from hpstudy.probes import GROUPS, region_masks, status_word

__all__ = ["plot_probes"]


def plot_probes(result: Mapping[str, Any], image: np.ndarray, path: str | Path, *, title: str) -> Path:
    """Draw the probes: the regions on a test image, the three AUCs, the mass fractions per group.

    Raises:
        StudyError: the figure cannot be written (disk full, read-only folder); probes.json is kept.
    """
    fig = Figure(figsize=(14, 4.4), layout="constrained")
    ax_image, ax_auc, ax_mass = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.1, 1.6]})
    _draw_regions(ax_image, image, result["regions"])
    _draw_aucs(ax_auc, result["occlusion"])
    _draw_mass(ax_mass, result)
    fig.suptitle(f"{title}: {status_word(result['flagged'])}", fontsize=11)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    except OSError as exc:
        if not write_problem(exc):
            raise
        raise StudyError(f"the probes are saved ({Path(path).with_name('probes.json')}), but their figure could "
                         f"not be drawn: {write_problem(exc, rerun=False)}") from exc
    return Path(path)


def _draw_regions(ax: Any, image: np.ndarray, regions: Mapping[str, Any]) -> None:
    size = image.shape[:2]
    center, band = region_masks(size, center=regions["center"], border=regions["border"])
    ax.imshow(np.clip(np.asarray(image, dtype="float32")[..., 0] / 255.0, 0, 1), cmap="gray", vmin=0, vmax=1)
    shade = np.zeros((*size, 4))
    shade[band] = (1.0, 0.55, 0.0, 0.45)
    shade[center] = (0.1, 0.5, 1.0, 0.35)
    ax.imshow(shade)
    ax.set_title(f"central box {regions['center']:g} (blue), border band {regions['border']:g} (orange)",
                 fontsize=9)
    ax.set_axis_off()


def _draw_aucs(ax: Any, occlusion: Mapping[str, Any]) -> None:
    names = ("unmasked", "center_masked", "border_masked")
    values = [occlusion["auc"][n] or math.nan for n in names]
    errors = np.array([[v - (occlusion["ci95"][n] or [v, v])[0], (occlusion["ci95"][n] or [v, v])[1] - v]
                       for n, v in zip(names, values)]).T
    ax.bar(["unmasked", "centre hidden", "border hidden"], values, yerr=errors, capsize=4,
           color=["0.5", "tab:blue", "tab:orange"])
    ax.axhline(0.5, color="k", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test ROC AUC (95% CI)")
    ax.set_title("(a) occlusion", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)


def _draw_mass(ax: Any, result: Mapping[str, Any]) -> None:
    series = [("centre", result["gradcam_mass"]["center"], result["regions"]["center_area"], "tab:blue"),
              ("border", result["gradcam_mass"]["border"], result["regions"]["border_area"], "tab:orange")]
    if result["lung_masks"].get("lungs"):
        series.append(("lungs", result["lung_masks"]["lungs"], result["lung_masks"]["area"], "tab:green"))
    labels = [g.upper() for g in GROUPS] + ["TP+FP"]
    width = 0.8 / len(series)
    for k, (name, groups, area, colour) in enumerate(series):
        means = [groups[g]["mean"] if groups[g]["mean"] is not None else math.nan
                 for g in (*GROUPS, "positive_evidence")]
        ax.bar(np.arange(len(labels)) + (k - (len(series) - 1) / 2) * width, means, width, color=colour,
               label=f"{name} (area {area:.0%})")
        ax.axhline(area, color=colour, linestyle="--", linewidth=1)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of Grad-CAM mass (dashed: share of area)")
    ax.set_title("(b, c) where the Grad-CAM mass lies", fontsize=10)
    ax.legend(fontsize=8)
