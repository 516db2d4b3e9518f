"""Report blocks for the operating point, calibration and external validation of an evaluated model.

``operating_blocks`` adds to a model's test section the chosen threshold with its source and the caveat,
the metrics at that threshold and at 0.5 side by side, and the calibration table. ``external_section``
puts the internal test and every external set side by side (``side_by_side``, a pure function of the
``metrics.json`` results) with their figures. Everything is read with ``.get()``: older files lack the keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from hpstudy.paths import MODELS
from hpstudy.records import ledger_entries, read_metrics
from hpstudy.report.assets import Assets
from hpstudy.report.document import Block, Figure, Note, Para, Section, Table
from hpstudy.report.runs import StudyRun

__all__ = ["CAVEAT", "finalize_blocks", "operating_blocks", "metrics_at_both", "calibration_table", "side_by_side",
           "external_sets", "external_section"]

CAVEAT = ("The final model was retrained on train+val, so its threshold (and temperature) come from a sibling "
          "model trained on the training split only and transfer to it only approximately.")
_SIDE_BY_SIDE = (("roc_auc", "AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"))


def _interval(value: Any, ci: Any) -> str:
    """``0.912 (0.851-0.962)``, or what exists of it."""
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return ""
    low, high = (list(ci or []) + [None, None])[:2]
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{value:.3f} ({low:.3f}–{high:.3f})"
    return f"{value:.3f}"


def metrics_at_both(result: dict[str, Any]) -> pd.DataFrame:
    """Each metric at the chosen threshold and at 0.5, with its 95 % interval (rows: metrics)."""
    chosen, at_half = result.get("metrics") or {}, result.get("metrics_at_0_5") or result.get("metrics") or {}
    ci, ci_half = result.get("ci95") or {}, result.get("ci95_at_0_5") or result.get("ci95") or {}
    threshold = result.get("threshold", 0.5)
    rows = [{"metric": name, f"at threshold {threshold:.4g}": _interval(chosen.get(name), ci.get(name)),
             "at 0.5": _interval(at_half.get(name), ci_half.get(name))}
            for name in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1") if name in chosen]
    return pd.DataFrame(rows)


def calibration_table(result: dict[str, Any]) -> pd.DataFrame:
    """Brier score and ECE with their 95 % intervals (and before the temperature, when one was applied)."""
    calibration = result.get("calibration") or {}
    before = calibration.get("before")
    if "brier" not in calibration:
        parts = []
    elif isinstance(before, dict) and "brier" in before:
        scaled = f"after temperature scaling (T = {calibration.get('temperature') or float('nan'):.3g})"
        parts = [("model", before), (scaled, calibration)]
    else:
        parts = [("model", calibration)]
    rows = [{"probabilities": name, "Brier score": _interval(part.get("brier"), part.get("brier_ci95")),
             "ECE": _interval(part.get("ece"), part.get("ece_ci95"))} for name, part in parts]
    return pd.DataFrame(rows, columns=["probabilities", "Brier score", "ECE"])


def _threshold_text(result: dict[str, Any]) -> str:
    info = result.get("threshold_info") or {}
    policy, target = info.get("policy", "fixed"), info.get("target")
    rule = policy if target is None else f"{policy} {target:g}"
    text = (f"Operating point: threshold {result.get('threshold', 0.5):.4g} ({rule}); source: "
            f"{info.get('source', 'none recorded')}.")
    if "val_sensitivity" in info:
        text += (f" On those validation predictions: sensitivity {info['val_sensitivity']:.3f}, specificity "
                 f"{info['val_specificity']:.3f}.")
    return text


def finalize_blocks(record: dict[str, Any]) -> list[Block]:
    """The threshold and temperature ``finalize`` chose (``best_config.json``), or nothing for older studies."""
    threshold, calibration = record.get("threshold"), record.get("calibration")
    if not isinstance(threshold, dict):
        return []
    target = "" if threshold.get("target") is None else f" {threshold['target']:g}"
    text = (f"Operating point chosen at finalize: threshold {threshold.get('value', 0.5):.4g} "
            f"({threshold.get('policy', 'fixed')}{target}); source: {threshold.get('source', 'not recorded')}.")
    if isinstance(calibration, dict) and calibration.get("method") == "temperature":
        text += (f" Temperature scaling: T = {calibration.get('temperature'):.3g}, fitted on "
                 f"{calibration.get('fitted_on')}.")
    return [Para(text)]


def operating_blocks(result: dict[str, Any], name: str) -> list[Block]:
    """The threshold with its source and the caveat, metrics at both thresholds, and calibration."""
    info, calibration = result.get("threshold_info") or {}, result.get("calibration") or {}
    fitted = info.get("policy", "fixed") != "fixed" or calibration.get("method") == "temperature"
    blocks: list[Block] = [Para(_threshold_text(result) + (" " + CAVEAT if fitted else ""))]
    if result.get("metrics_at_0_5") is not None and result.get("threshold", 0.5) != 0.5:
        blocks.append(Table(metrics_at_both(result), caption=f"Test metrics of the {name} model at the chosen "
                                                             "threshold and at 0.5, with bootstrap 95% CIs"))
    table = calibration_table(result)
    if table.empty:
        blocks.append(Note(f"No calibration in this metrics.json of the {name} model (evaluated before calibration "
                           "was reported)."))
    else:
        blocks.append(Table(table, caption=f"Calibration of the {name} model on the test split, bootstrap 95% CIs; "
                                           f"{calibration.get('binning', '')}"))
    return blocks


# ---------------------------------------------------------------- external validation
def external_sets(run: StudyRun) -> list[tuple[str, str]]:
    """``(model, set name)`` of every completed external evaluation in the ledger, first seen first."""
    found: dict[tuple[str, str], None] = {}
    for entry in ledger_entries(run.paths):
        dataset = entry.get("dataset", "test")
        if entry.get("status", "completed") == "completed" and dataset != "test" and entry.get("model") in MODELS:
            found[(entry["model"], dataset)] = None
    return list(found)


def side_by_side(results: Sequence[tuple[str, str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per (model, set, result): n, threshold, AUC, sensitivity, specificity, Brier and ECE with 95 % CIs."""
    rows = []
    for model, dataset, result in results:
        metrics, ci = result.get("metrics") or {}, result.get("ci95") or {}
        calibration = result.get("calibration") or {}
        row = {"model": model, "set": dataset, "images": result.get("n_test"),
               "threshold": f"{result.get('threshold', 0.5):.4g}"}
        row.update({label: _interval(metrics.get(key), ci.get(key)) for key, label in _SIDE_BY_SIDE})
        row["Brier"] = _interval(calibration.get("brier"), calibration.get("brier_ci95"))
        row["ECE"] = _interval(calibration.get("ece"), calibration.get("ece_ci95"))
        leaks = result.get("leaks_with_study", result.get("leaks_across_all_splits"))
        row["leak pairs"] = "" if leaks is None else int(leaks)
        rows.append(row)
    return pd.DataFrame(rows)


def external_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """Internal test and external sets side by side, and the external sets' ROC and reliability figures."""
    section = Section("External validation", anchor)
    pairs = external_sets(run)
    if not pairs:
        return section.add(Note(f"No external set evaluated: run `hpstudy evaluate {run.command_target} --external "
                                "NAME=PATH` (a folder or zip with the study's class folders; leak-checked first)."))
    models = list(dict.fromkeys(model for model, _ in pairs))
    rows = [(m, "test", read_metrics(run.paths, m)) for m in models if read_metrics(run.paths, m)]
    rows += [(m, d, read_metrics(run.paths, m, d)) for m, d in pairs if read_metrics(run.paths, m, d)]
    section.add(Para("Every set evaluated once per model with the study's train-fitted normalization, threshold and "
                     "temperature; 'leak pairs' counts images shared with the study's splits (internal test: across "
                     "train/val/test; external: with any split of the study, listed in "
                     f"`{run.paths.evaluation_dir}/leaks_external_<name>.csv`)."),
                Table(side_by_side(rows), caption="Internal test and external sets side by side (95% bootstrap CIs)"))
    shared = {dataset: result["leaks_with_study"] for _, dataset, result in rows if result.get("leaks_with_study")}
    for dataset, count in shared.items():
        section.add(Note(f"Warning: the external set {dataset} shares {count} image(s) with the study's splits "
                         f"(`{run.paths.external_leaks_csv(dataset)}`): its results are not independent of the "
                         "study's data."))
    for model, dataset in pairs:
        folder = run.paths.evaluation_of(model, dataset)
        for file_name, what in (("roc.png", "ROC curve"), ("reliability.png", "Reliability diagram")):
            if (folder / file_name).is_file():
                section.add(Figure(assets.copy(folder / file_name, f"{model}-{dataset}_{file_name}"),
                                   f"{what} on the external set {dataset} ({model} model)"))
    return section
