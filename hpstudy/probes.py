"""Shortcut probes of an evaluated model on the test split: does it read the lungs, or something else?

COVID-19 chest X-ray classifiers are known to learn the hospital instead of the disease: markers, text,
borders (DeGrave et al. 2021, Nature Machine Intelligence). Three probes, run after the model's single
test evaluation (``explain.probe_study``; recorded in the ledger as ``"kind": "probe"``, never a use):

(a) **Occlusion.** The test ROC AUC unmasked, with the central box hidden (``probes.center``, a fraction
    of the side: the lung fields of a PA/AP film lie in the middle) and with the border band hidden
    (``probes.border``: markers, labels and collimation edges lie there). A hidden region is filled with
    each image's own mean pixel value, before normalization (not black, which would draw a strong edge;
    and one rule for every normalization strategy). **Flagged** when the model keeps at least half of
    its discrimination above chance with the centre hidden, ``(AUC_center - 0.5) >= 0.5 (AUC - 0.5)``,
    or when hiding the border band costs more AUC than hiding the centre. The cut lies half-way between
    the known answers (tests/test_probes.py, 48 px phantoms, centre 0.7, phantom seeds 1-4): a model that
    reads the lesion keeps -33 % to +1 % (AUC 0.96-1.00 -> 0.34-0.50), one that reads a planted corner
    marker keeps 100 % (AUC 1.00 -> 1.00; 0.41-0.58 with the border hidden). Not assessed below an unmasked
    AUC of 0.6 (nothing to lose). 95 % intervals: paired stratified bootstrap.
(b) **Grad-CAM mass.** The fraction of each map's total mass (upsampled to the image) inside the central
    box and inside the border band, per TP/TN/FP/FN group (TP and FP maps explain the positive class, TN
    and FN the negative, as in ``hpstudy gradcam``), against the regions' area fractions: a map without
    information spreads its mass like the area. **Flagged** when the maps explaining positive predictions
    (TP and FP) put more than the band's area share into the band (enrichment > 1): what makes the model
    say "positive" then lies where no lung is. Known answers as above: marker 1.25-1.46x, lesion 0.04-0.09x.
(c) **Lung masks**, when the data set ships them (``data.masks``): the in-lung fraction of the same maps'
    mass against the lungs' area fraction. **Flagged** when the maps explaining positive predictions put
    less than the lungs' area share into the lungs (enrichment < 1): the evidence for a lung disease is
    then found outside the lungs.

Empty Grad-CAM maps (``gradcam.empty_maps``) have no mass: they are counted and left out of the means.
The probes are computed here from a model and the images (``run_probes``); the verdicts are pure functions
of the numbers (``occlusion_probe``, ``mass_probe``, ``lung_probe``), tested on hand-made ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy.errors import ConfigError
from hpstudy.metrics import binary_metrics, paired_auc_bootstrap, percentile_interval

__all__ = ["GROUPS", "POSITIVE_EVIDENCE", "MIN_AUC", "RETAINED_FLAG", "region_masks", "occlude", "mass_fractions",
           "occlusion_probe", "mass_probe", "lung_probe", "overall", "status_word", "ProbeInputs", "run_probes"]

log = logging.getLogger("hpstudy")

GROUPS = ("tp", "tn", "fp", "fn")
POSITIVE_EVIDENCE = ("tp", "fp")  # the groups whose maps explain the positive class
MIN_AUC = 0.6  # below it the occlusion probe has too little discrimination to lose
RETAINED_FLAG = 0.5  # share of the above-chance AUC kept with the centre hidden that flags a shortcut
FILL = "each image's mean pixel value, before normalization"


# --------------------------------------------------------------------------- regions

def region_masks(size: tuple[int, int], *, center: float, border: float) -> tuple[np.ndarray, np.ndarray]:
    """The central box and the border band of an ``(H, W)`` image as boolean masks.

    A pixel belongs to a region by its centre ``((i + 0.5) / H, (j + 0.5) / W)``: the box holds the
    pixels whose both coordinates lie within ``center / 2`` of 0.5, the band those within ``border`` of
    an edge.

    Raises:
        ValueError: fractions outside (0, 1), or a region with no pixel at this size.
    """
    if not (0 < center < 1 and 0 < border < 1):
        raise ValueError(f"center and border must be fractions in (0, 1), got {center!r} and {border!r}")
    rows, cols = ((np.arange(n) + 0.5) / n for n in size)
    inner = (np.abs(rows - 0.5) <= center / 2)[:, None] & (np.abs(cols - 0.5) <= center / 2)[None, :]
    band = (np.minimum(rows, 1 - rows) < border)[:, None] | (np.minimum(cols, 1 - cols) < border)[None, :]
    if not inner.any() or not band.any():
        raise ValueError(f"at {size[0]}x{size[1]} px the central box ({center}) or the border band ({border}) "
                         "holds no pixel")
    return inner, band


def occlude(images: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A copy of ``images`` ``(N, H, W, C)`` with ``region`` ``(H, W)`` filled with each image's mean value."""
    out = np.array(images, dtype="float32", copy=True)
    means = out.mean(axis=(1, 2), keepdims=True)
    out[:, region] = np.broadcast_to(means, out.shape)[:, region]
    return out


def mass_fractions(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The fraction of each map's total mass inside a region: ``(N,)``, NaN for an empty map.

    Args:
        maps: ``(N, h, w)`` Grad-CAM maps in ``[0, 1]``; bilinearly resized to the regions' size.
        regions: one ``(H, W)`` mask for every map, or ``(N, H, W)`` masks (e.g. lung masks).
    """
    from hpstudy.gradcam import resize_heatmap

    regions = np.asarray(regions, dtype=bool)
    maps = resize_heatmap(np.asarray(maps, dtype="float32"), regions.shape[-2:]).astype("float64")
    total = maps.sum(axis=(1, 2))
    inside = (maps * regions).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(maps), math.nan), where=total > 0)


# --------------------------------------------------------------------------- (a) occlusion

def _interval(values: np.ndarray) -> list[float] | None:
    low, high = percentile_interval(values)
    return None if math.isnan(low) else [low, high]


def occlusion_probe(y_true: np.ndarray, scores: Mapping[str, np.ndarray], *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Probe (a) from the scores ``{"unmasked", "center_masked", "border_masked"}`` of the same images.

    Returns:
        AUCs, the share of above-chance AUC kept with the centre hidden (``retained``), the AUC drops,
        their paired-bootstrap 95 % intervals (``ci95``), ``flagged`` (None when not assessed) and a
        one-sentence ``verdict``.
    """
    auc = {name: binary_metrics(y_true, values)["roc_auc"] for name, values in scores.items()}
    boot = paired_auc_bootstrap(y_true, dict(scores), n_boot=n_boot, seed=seed)
    full, center, border = auc["unmasked"], auc["center_masked"], auc["border_masked"]
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = (boot["center_masked"] - 0.5) / (boot["unmasked"] - 0.5)
    result = {"auc": auc, "retained": (center - 0.5) / (full - 0.5) if full > 0.5 else math.nan,
              "drop_center": full - center, "drop_border": full - border,
              "ci95": {"unmasked": _interval(boot["unmasked"]), "center_masked": _interval(boot["center_masked"]),
                       "border_masked": _interval(boot["border_masked"]),
                       "retained": _interval(np.where(boot["unmasked"] > 0.5, kept, np.nan)),
                       "drop_center": _interval(boot["unmasked"] - boot["center_masked"]),
                       "drop_border": _interval(boot["unmasked"] - boot["border_masked"])},
              "rule": f"flagged when retained >= {RETAINED_FLAG} or drop_border > drop_center; "
                      f"not assessed below AUC {MIN_AUC}"}
    return {**result, **_occlusion_verdict(result)}


def _occlusion_verdict(result: dict[str, Any]) -> dict[str, Any]:
    auc, ci = result["auc"], result["ci95"]
    numbers = (f"test ROC AUC {auc['unmasked']:.3f} unmasked, {auc['center_masked']:.3f} with the central box hidden "
               f"and {auc['border_masked']:.3f} with the border band hidden")
    if not auc["unmasked"] >= MIN_AUC:
        return {"flagged": None, "verdict": f"Occlusion: {numbers}; not assessed, the model barely discriminates "
                                            f"(AUC below {MIN_AUC})."}
    kept = f"it keeps {result['retained']:.0%}{_ci_text(ci['retained'], percent=True)} of its discrimination above " \
           "chance without the central region"
    if result["retained"] >= RETAINED_FLAG:
        why = "flagged: it relies largely on something outside the central region"
    elif result["drop_border"] > result["drop_center"]:
        why = "flagged: hiding the border band costs more than hiding the centre"
    else:
        return {"flagged": False, "verdict": f"Occlusion: {numbers}; {kept}: not flagged (the central region "
                                             "carries its evidence)."}
    return {"flagged": True, "verdict": f"Occlusion: {numbers}; {kept}: {why}."}


def _ci_text(interval: list[float] | None, *, percent: bool = False) -> str:
    if not interval:
        return ""
    low, high = interval
    return f" [{low:.0%}, {high:.0%}]" if percent else f" [{low:.3f}, {high:.3f}]"


# --------------------------------------------------------------------------- (b) and (c) Grad-CAM mass

def _group_means(fractions: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per group: images, empty maps, and the mean fraction over the non-empty ones (None if none)."""
    out = {}
    for name in list(GROUPS) + ["positive_evidence", "all"]:
        if name == "positive_evidence":
            index = np.concatenate([np.asarray(groups.get(g, []), dtype=int) for g in POSITIVE_EVIDENCE])
        elif name == "all":
            index = np.arange(len(fractions))
        else:
            index = np.asarray(groups.get(name, []), dtype=int)
        values = fractions[index]
        finite = values[np.isfinite(values)]
        out[name] = {"n": int(len(index)), "empty": int(len(index) - len(finite)),
                     "mean": float(finite.mean()) if len(finite) else None}
    return out


def mass_probe(center_fractions: np.ndarray, border_fractions: np.ndarray, groups: Mapping[str, np.ndarray], *,
               center_area: float, border_area: float) -> dict[str, Any]:
    """Probe (b) from per-image mass fractions (``mass_fractions``) and the TP/TN/FP/FN index groups.

    Returns:
        ``center`` and ``border``: per group ``{n, empty, mean}``; the area fractions; the enrichment
        (mean fraction / area fraction) of the positive-evidence maps; ``flagged`` and ``verdict``.
    """
    center = _group_means(np.asarray(center_fractions, dtype="float64"), groups)
    border = _group_means(np.asarray(border_fractions, dtype="float64"), groups)
    result = {"center": center, "border": border, "center_area": float(center_area),
              "border_area": float(border_area), "rule": "flagged when the TP+FP maps' mean border mass fraction "
                                                          "exceeds the border band's area fraction"}
    pos_border, pos_center = border["positive_evidence"]["mean"], center["positive_evidence"]["mean"]
    n = border["positive_evidence"]["n"] - border["positive_evidence"]["empty"]
    if pos_border is None or pos_center is None:
        return {**result, "flagged": None, "verdict": "Grad-CAM mass: not assessed, no non-empty Grad-CAM map "
                                                      "explains a positive prediction (no TP or FP)."}
    enrich_border, enrich_center = pos_border / border_area, pos_center / center_area
    flagged = enrich_border > 1.0
    text = (f"Grad-CAM mass: the maps explaining positive predictions (TP and FP, n={n}) put {pos_border:.0%} of "
            f"their mass in the border band ({border_area:.0%} of the image, {enrich_border:.1f}x its share) and "
            f"{pos_center:.0%} in the central box ({center_area:.0%}, {enrich_center:.1f}x)")
    text += (": flagged (the border draws more than its share)." if flagged
             else ": not flagged (the border draws less than its share).")
    return {**result, "enrichment": {"border": enrich_border, "center": enrich_center}, "flagged": flagged,
            "verdict": text}


def lung_probe(lung_fractions: np.ndarray, lung_areas: np.ndarray, groups: Mapping[str, np.ndarray], *,
               found: int, n_test: int) -> dict[str, Any]:
    """Probe (c) from the in-lung mass fraction and lung area fraction of every test image (NaN: no mask).

    Returns:
        ``lungs`` per group ``{n, empty, mean}``, the mean lung ``area``, ``found`` masks,
        ``flagged`` and ``verdict``.
    """
    fractions, areas = np.asarray(lung_fractions, dtype="float64"), np.asarray(lung_areas, dtype="float64")
    result: dict[str, Any] = {"found": int(found), "n_test": int(n_test),
                              "rule": "flagged when the TP+FP maps' mean in-lung mass fraction is below the mean "
                                      "lung area fraction of the same images"}
    if found == 0:
        return {**result, "flagged": None, "verdict": "Lung masks: not run, the data set ships no lung masks "
                                                      "(<class>/masks/<name> or masks/<split>/<class>/<name>)."}
    index = np.concatenate([np.asarray(groups.get(g, []), dtype=int) for g in POSITIVE_EVIDENCE])
    usable = index[np.isfinite(fractions[index])] if len(index) else index
    result["lungs"] = _group_means(fractions, groups)
    if len(usable) == 0:
        return {**result, "flagged": None, "verdict": f"Lung masks ({found} of {n_test} test images): not assessed, "
                                                      "no non-empty map with a mask explains a positive prediction."}
    share, area = float(fractions[usable].mean()), float(areas[usable].mean())
    flagged = share < area
    text = (f"Lung masks ({found} of {n_test} test images): the maps explaining positive predictions (n={len(usable)}) "
            f"put {share:.0%} of their mass inside the lungs, which cover {area:.0%} of those images "
            f"({share / area:.1f}x their share)")  # area > 0: empty masks are left out
    text += ": flagged (less than the lungs' share)." if flagged else ": not flagged (more than the lungs' share)."
    return {**result, "area": area, "enrichment": share / area, "flagged": flagged, "verdict": text}


# --------------------------------------------------------------------------- running the probes

@dataclass(frozen=True)
class ProbeInputs:
    """What the probes look at: the evaluated test images and what the evaluation recorded about them.

    ``x`` are the images on 0..255 as loaded (``(N, H, W, C)``), ``y`` their labels, ``recorded`` the
    evaluation's probabilities (they define the TP/TN/FP/FN groups at ``threshold``), ``paths`` and
    ``root`` where the image files are (to find lung masks beside them), ``raw`` the model's own outputs
    the evaluation recorded when a temperature changed them (default: ``recorded``): the probes check
    that the model still gives them.
    """

    x: np.ndarray
    y: np.ndarray
    recorded: np.ndarray
    normalizer: Any
    paths: Sequence[Path] = ()
    root: Path | None = None
    threshold: float = 0.5
    raw: np.ndarray | None = None


def run_probes(classifier: Any, inputs: ProbeInputs, *, center: float = 0.5, border: float = 0.1,
               layer: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Probes (a)-(c) of ``classifier`` on ``inputs``: the record ``probes.json`` holds (JSON-ready).

    Raises:
        ConfigError: a Grad-CAM layer the model does not have (the message lists candidates).
        ValueError: regions with no pixel at this image size, or one class only in ``inputs.y``.
    """
    size = tuple(inputs.x.shape[1:3])
    inner, band = region_masks(size, center=center, border=border)

    def predict(images: np.ndarray) -> np.ndarray:
        return classifier.predict(inputs.normalizer.apply(images), verbose=0).reshape(-1).astype("float64")

    scores = {"unmasked": predict(inputs.x), "center_masked": predict(occlude(inputs.x, inner)),
              "border_masked": predict(occlude(inputs.x, band))}
    groups = _groups(inputs)
    maps = _maps(classifier, inputs.normalizer.apply(inputs.x), groups, layer)
    probes = {"occlusion": occlusion_probe(inputs.y, scores, n_boot=n_boot, seed=seed),
              "gradcam_mass": mass_probe(mass_fractions(maps, inner), mass_fractions(maps, band), groups,
                                         center_area=float(inner.mean()), border_area=float(band.mean())),
              "lung_masks": _lungs(inputs, maps, groups)}
    reference = inputs.recorded if inputs.raw is None else inputs.raw
    drift = float(np.abs(scores["unmasked"] - np.asarray(reference, dtype="float64")).max())
    if drift > 1e-3:
        log.warning("warning: the model's unmasked test scores differ from the evaluation's by up to %.4f: "
                    "the images or the model changed since", drift)
    return _plain({"n_test": len(inputs.y), "threshold": inputs.threshold,
                   "groups": {g: len(v) for g, v in groups.items()},
                   "regions": {"center": center, "border": border, "center_area": float(inner.mean()),
                               "border_area": float(band.mean()), "fill": FILL},
                   "layer": layer, "empty_maps": int(_empty(maps).sum()), "max_score_difference": drift,
                   **probes, "flagged": overall([p["flagged"] for p in probes.values()]),
                   "verdicts": [p["verdict"] for p in probes.values()]})


def overall(flags: Sequence[bool | None]) -> bool | None:
    """Flagged when any probe is, not flagged when at least one was assessed, else None (none assessed)."""
    if any(flag is True for flag in flags):
        return True
    return False if any(flag is False for flag in flags) else None


def _groups(inputs: ProbeInputs) -> dict[str, np.ndarray]:
    from hpstudy.gradcam import outcome_groups

    return outcome_groups(inputs.y, inputs.recorded, threshold=inputs.threshold)


def _empty(maps: np.ndarray) -> np.ndarray:
    from hpstudy.gradcam import empty_maps

    return empty_maps(maps)


def _maps(classifier: Any, images: np.ndarray, groups: Mapping[str, np.ndarray], layer: str | None) -> np.ndarray:
    """Grad-CAM of every test image: TP/FP explain the positive class, TN/FN the negative (as ``gradcam``)."""
    from hpstudy.gradcam import heatmap

    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for explain, names in (("positive", POSITIVE_EVIDENCE), ("negative", ("tn", "fn"))):
        index = np.concatenate([groups[g] for g in names]).astype(int)
        if len(index):
            try:
                parts[explain] = index, heatmap(classifier, images[index], layer=layer, explain=explain)
            except ValueError as exc:  # e.g. an unknown layer: the message lists the candidates
                raise ConfigError(f"--layer: {exc}") from None
    shape = next(iter(parts.values()))[1].shape[1:]
    maps = np.zeros((len(images), *shape), dtype="float32")
    for index, found in parts.values():
        maps[index] = found
    return maps


def _lungs(inputs: ProbeInputs, maps: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
    from hpstudy.data.masks import find_masks, load_masks

    found = find_masks(list(inputs.paths), inputs.root) if inputs.root is not None else []
    have = np.array([i for i, p in enumerate(found) if p is not None], dtype=int)
    fractions, areas = np.full(len(maps), math.nan), np.full(len(maps), math.nan)
    if len(have):
        masks = load_masks([found[i] for i in have], image_size=tuple(inputs.x.shape[1:3]))
        usable = masks.any(axis=(1, 2))  # an empty mask has no lung to compare with
        fractions[have[usable]] = mass_fractions(maps[have[usable]], masks[usable])
        areas[have[usable]] = masks[usable].mean(axis=(1, 2))
    return lung_probe(fractions, areas, groups, found=len(have), n_test=len(maps))


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, NaN to None (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def status_word(flagged: bool | None) -> str:
    """``FLAGGED``, ``not flagged`` or ``not assessed``."""
    return "FLAGGED" if flagged else "not assessed" if flagged is None else "not flagged"
