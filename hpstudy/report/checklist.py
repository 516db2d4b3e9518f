"""A reporting checklist modelled on CLAIM (Checklist for AI in Medical Imaging, 2024 update) and TRIPOD+AI
(BMJ 2024), filled from what a study run knows.

Each item is ``reported`` (with the numbers and the file they come from), ``not yet`` (hpstudy can produce
it: the command is named) or ``to write`` (only the author can say it: intended use, population,
reference standard, ...). ``checklist_items`` reads the run's files and writes nothing (tested on a
hand-made study folder); ``checklist_section`` renders the items as a table. The items paraphrase the
guidelines' topics; they are no substitute for the official checklists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy.records import evaluation_entries, is_probe, ledger_entries, read_metrics, read_probes
from hpstudy.report.assets import read_csv, read_json
from hpstudy.report.document import Para, Section, Table
from hpstudy.report.runs import StudyRun

__all__ = ["ChecklistItem", "REPORTED", "NOT_YET", "TO_WRITE", "checklist_items", "checklist_section"]

REPORTED, NOT_YET, TO_WRITE = "reported", "not yet", "to write"
_MODELS = ("final", "finetune")


@dataclass(frozen=True)
class ChecklistItem:
    """One line of the checklist: the topic, the guidelines that ask for it, its status and where it is."""

    topic: str
    guideline: str
    status: str
    detail: str
    where: str = ""


def _item(topic: str, guideline: str, found: tuple[str, str] | None, missing: str, *,
          status_if_missing: str = NOT_YET) -> ChecklistItem:
    if found is None:
        return ChecklistItem(topic, guideline, status_if_missing, missing)
    return ChecklistItem(topic, guideline, REPORTED, *found)


def _to_write(topic: str, guideline: str, what: str) -> ChecklistItem:
    return ChecklistItem(topic, guideline, TO_WRITE, what)


def _rel(run: StudyRun, path: Path) -> str:
    try:
        return path.relative_to(run.paths.root).as_posix()
    except ValueError:
        return str(path)


def _best(run: StudyRun) -> dict[str, Any] | None:
    """``final/best_config.json`` as written (a report shows what exists, even an older or partial record)."""
    record = read_json(run.paths.best_config)
    return record if isinstance(record, dict) else None


def _evaluated(run: StudyRun) -> list[str]:
    return [m for m in _MODELS if read_metrics(run.paths, m)]


# --------------------------------------------------------------------------- data

def _data_source(run: StudyRun) -> tuple[str, str] | None:
    if not run.frozen:
        return None
    fingerprint = str(run.frozen.get("data_fingerprint") or "?")[:16]
    return (f"{run.config.get('data')}; train+val fingerprint {fingerprint}…", _rel(run, run.paths.frozen_config))


def _preprocessing(run: StudyRun) -> tuple[str, str] | None:
    stats = read_json(run.paths.data_stats)
    if not isinstance(stats, dict):
        return None
    normalizer = stats.get("normalizer") or {}
    size = "x".join(str(s) for s in stats.get("image_size") or [])
    augmentation = run.config.get("augmentation")
    shown = ", ".join(f"{k} {v}" for k, v in augmentation.items()) if isinstance(augmentation, dict) else "none"
    return (f"grey, resized to {size} px; normalization {normalizer.get('strategy')} fitted on "
            f"{stats.get('fitted_on', 'train')} only; augmentation (training batches only): {shown}",
            _rel(run, run.paths.data_stats))


def _partitions(run: StudyRun) -> tuple[str, str] | None:
    stats = read_json(run.paths.data_stats)
    if not isinstance(stats, dict):
        return None
    counts, positives = stats.get("counts") or {}, stats.get("positives") or {}
    parts = [f"{s} {counts.get(s)} ({positives.get(s)} {stats.get('positive_class')})" for s in ("train", "val")]
    tests = {(read_metrics(run.paths, m) or {}).get("n_test") for m in _evaluated(run)} - {None}
    parts.append(f"test {', '.join(map(str, sorted(tests)))}" if tests else "test not read yet")
    return "; ".join(parts), _rel(run, run.paths.data_stats)


def _leakage(run: StudyRun) -> tuple[str, str] | None:
    if run.config.get("leak_check") == "off":
        return None
    leaks = read_csv(run.paths.leaks_csv)
    if leaks is None:
        return None
    across = {(read_metrics(run.paths, m) or {}).get("leaks_across_all_splits") for m in _evaluated(run)} - {None}
    text = f"{len(leaks)} image pair(s) shared by train and val (byte-identical or near-identical)"
    text += f"; {max(across)} across all splits incl. test" if across else "; test split not checked yet"
    return text, _rel(run, run.paths.leaks_csv)


# --------------------------------------------------------------------------- model, search, selection

def _model(run: StudyRun) -> tuple[str, str] | None:
    if not run.frozen:
        return None
    space = run.config.get("search_space_path") or "inline (in study.yaml)"
    return (f"family {run.family}, weights {run.config.get('weights')}; search space {space}",
            _rel(run, run.paths.frozen_config))


def _search(run: StudyRun) -> tuple[str, str] | None:
    if run.trials is None:
        return None
    oracle = {k: v for k, v in (run.config.get("oracle") or {}).items()}
    done = int((run.trials["status"] == "COMPLETED").sum()) if "status" in run.trials else len(run.trials)
    stopping = run.config.get("early_stopping") or {}
    return (f"{oracle.pop('type', '?')} search ({', '.join(f'{k} {v}' for k, v in oracle.items())}), objective "
            f"{run.objective} on the validation split, {done} completed trial(s) of {len(run.trials)}; early "
            f"stopping on {stopping.get('monitor')} (patience {stopping.get('patience')}); seed "
            f"{run.config.get('seed')}", _rel(run, run.paths.trials_csv))


def _selection(run: StudyRun) -> tuple[str, str] | None:
    best = _best(run)
    if best is None:
        return None
    selection = best.get("selection")
    if isinstance(selection, dict) and selection.get("sentence"):
        sentence = str(selection["sentence"])
        return sentence[:1].upper() + sentence[1:], _rel(run, run.paths.best_config)
    return (f"trial {best.get('trial_id')}, the best single search run ({best.get('objective')} "
            f"{_num(best.get('score'))}); not re-evaluated with several seeds", _rel(run, run.paths.best_config))


def _final_training(run: StudyRun) -> tuple[str, str] | None:
    best = _best(run)
    if best is None:
        return None
    return (f"a fresh model trained on train+val ({best.get('train_val_images', '?')} images) for "
            f"{best.get('epochs', '?')} epochs (the selected best epoch), no early stopping",
            _rel(run, run.paths.best_config))


# --------------------------------------------------------------------------- evaluation

def _single_use(run: StudyRun) -> tuple[str, str] | None:
    entries = [e for e in evaluation_entries(run.paths) if e.get("dataset", "test") == "test"]
    completed = [e for e in entries if e.get("status", "completed") == "completed"]
    if not completed:
        return None
    per_model = {m: sum(1 for e in completed if e.get("model") == m) for m in _MODELS}
    forced = sum(1 for e in completed if e.get("forced"))
    shown = ", ".join(f"{m} {n}x" for m, n in per_model.items() if n)
    probes = sum(1 for e in ledger_entries(run.paths) if is_probe(e) and e.get("status") == "completed")
    return (f"completed test evaluations: {shown}; {forced} forced repeat(s); {probes} probe run(s), not counted "
            "as evaluations", _rel(run, run.paths.ledger))


def _performance(run: StudyRun) -> tuple[str, str] | None:
    texts, where = [], []
    for model in _evaluated(run):
        result = read_metrics(run.paths, model) or {}
        auc = (result.get("metrics") or {}).get("roc_auc")
        low, high = (list((result.get("ci95") or {}).get("roc_auc") or []) + [None, None])[:2]
        if auc is not None:
            texts.append(f"{model}: ROC AUC {auc:.3f} [{_num(low)}, {_num(high)}] on {result.get('n_test')} images")
            where.append(_rel(run, run.paths.metrics_json(model)))
    return ("; ".join(texts) + " (95 % bootstrap intervals; sensitivity, specificity, precision, F1 likewise)",
            ", ".join(where)) if texts else None


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _threshold(run: StudyRun) -> tuple[str, str] | None:
    record = (_best(run) or {}).get("threshold")
    if isinstance(record, dict) and record.get("value") is not None:
        target = f" {record['target']}" if record.get("target") is not None else ""
        return (f"policy {record.get('policy')}{target}: {_num(record['value'])}; source: {record.get('source')} "
                f"(n={record.get('n_val')})", _rel(run, run.paths.best_config))
    for model in _evaluated(run):
        result = read_metrics(run.paths, model) or {}
        if result.get("threshold") is not None:
            return (f"fixed {result['threshold']} (not chosen on validation predictions)",
                    _rel(run, run.paths.metrics_json(model)))
    return None


def _calibration(run: StudyRun) -> tuple[str, str] | None:
    """Brier score and ECE with intervals (``metrics.json`` ``calibration``: ``brier``, ``brier_ci95``, ...)."""
    for model in _evaluated(run):
        calibration = (read_metrics(run.paths, model) or {}).get("calibration")
        if not isinstance(calibration, dict) or calibration.get("brier") is None:
            continue
        shown = [f"{name} {_num(calibration.get(key))}{_ci(calibration.get(key + '_ci95'))}"
                 for name, key in (("Brier", "brier"), ("ECE", "ece")) if calibration.get(key) is not None]
        binning = calibration.get("binning") or (f"{calibration['bins']} bins" if calibration.get("bins") else "")
        method = calibration.get("method", "none")
        scaled = (f"; temperature {_num(calibration.get('temperature'))} fitted on {calibration.get('fitted_on')}"
                  if method == "temperature" else "; no recalibration")
        return (f"{model}: {', '.join(shown)}" + (f" ({binning})" if binning else "") + scaled,
                _rel(run, run.paths.metrics_json(model)))
    return None


def _ci(interval: Any) -> str:
    return f" [{_num(interval[0])}, {_num(interval[1])}]" if isinstance(interval, list) and len(interval) == 2 else ""


def _external(run: StudyRun) -> tuple[str, str] | None:
    done = sorted({f"{e.get('model')} on {e.get('dataset')}" for e in evaluation_entries(run.paths)
                   if e.get("dataset", "test") != "test" and e.get("status", "completed") == "completed"})
    return ("; ".join(done), _rel(run, run.paths.ledger)) if done else None


def _probes(run: StudyRun) -> tuple[str, str] | None:
    for model in _MODELS:
        record = read_probes(run.paths, model)
        if record and record.get("verdicts"):
            flagged = {True: "FLAGGED", False: "not flagged"}.get(record.get("flagged"), "not assessed")
            return f"{model}: {flagged}. " + " ".join(record["verdicts"]), _rel(run, run.paths.probes_json(model))
    return None


def _failure_analysis(run: StudyRun) -> tuple[str, str] | None:
    for model in _MODELS:
        figures = [g for g in ("tp", "tn", "fp", "fn") if run.paths.gradcam_figure(model, g).is_file()]
        if figures:
            return (f"{model}: Grad-CAM of {', '.join(g.upper() for g in figures)} test images",
                    _rel(run, run.paths.evaluation_of(model)))
    return None


def _software(run: StudyRun) -> tuple[str, str] | None:
    versions = run.frozen.get("versions") if run.frozen else None
    if not isinstance(versions, dict):
        return None
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    return f"{shown}; seed {run.config.get('seed')}", _rel(run, run.paths.frozen_config)


# --------------------------------------------------------------------------- the list

_Source = Callable[[StudyRun], tuple[str, str] | None]
_ITEMS: tuple[tuple[str, str, _Source | str, str], ...] = (
    ("Intended use and clinical role", "CLAIM, TRIPOD+AI", "who is tested, where in the care pathway, and what "
     "decision the output informs", ""),
    ("Study design and goal", "CLAIM, TRIPOD+AI", "retrospective or prospective; model development or "
     "validation", ""),
    ("Data source", "CLAIM, TRIPOD+AI", _data_source, "run `hpstudy search`"),
    ("Eligibility, setting and dates", "CLAIM, TRIPOD+AI", "inclusion and exclusion criteria; sites, dates, "
     "consecutive or convenience series", ""),
    ("Population characteristics", "CLAIM, TRIPOD+AI", "age, sex, disease severity and scanner types per "
     "partition", ""),
    ("Reference standard", "CLAIM, TRIPOD+AI", "how the COVID/normal labels were established (RT-PCR, "
     "radiologist reading), by whom, with which tools", ""),
    ("Preprocessing", "CLAIM", _preprocessing, "run `hpstudy search` (it writes data_stats.json)"),
    ("Data partitions", "CLAIM, TRIPOD+AI", _partitions, "run `hpstudy search`"),
    ("Leakage between partitions", "CLAIM", _leakage, "leak check off or not run (leak_check: warn)"),
    ("Patient-level separation", "CLAIM, TRIPOD+AI", "whether one patient's images can fall into two "
     "partitions (hpstudy compares images, not patients)", ""),
    ("Model", "CLAIM, TRIPOD+AI", _model, "run `hpstudy search`"),
    ("Hyperparameter search and budget", "CLAIM, TRIPOD+AI", _search, "run `hpstudy search`"),
    ("Model selection", "CLAIM", _selection, "run `hpstudy finalize`"),
    ("Final training", "CLAIM", _final_training, "run `hpstudy finalize`"),
    ("Test set used once", "CLAIM", _single_use, "run `hpstudy evaluate`"),
    ("Performance with uncertainty", "CLAIM, TRIPOD+AI", _performance, "run `hpstudy evaluate`"),
    ("Operating point (threshold) and its source", "CLAIM, TRIPOD+AI", _threshold, "run `hpstudy evaluate`"),
    ("Calibration", "TRIPOD+AI", _calibration, "not in metrics.json: evaluate with an hpstudy that reports "
     "calibration"),
    ("External validation", "CLAIM, TRIPOD+AI", _external, "no external set evaluated (`hpstudy evaluate "
     "--external NAME=PATH`)"),
    ("Shortcut probes (robustness)", "CLAIM", _probes, "run `hpstudy probe` after `hpstudy evaluate`"),
    ("Failure analysis and explanation", "CLAIM", _failure_analysis, "run `hpstudy gradcam`"),
    ("Software, versions and seed", "CLAIM, TRIPOD+AI", _software, "run `hpstudy search`"),
    ("Limitations, code and data availability, funding", "CLAIM, TRIPOD+AI", "what the results do not show; "
     "where code, model and data can be obtained; who paid", ""),
)


def checklist_items(run: StudyRun) -> list[ChecklistItem]:
    """The checklist of one study run, in the order of the guidelines' sections (reads files, writes nothing)."""
    items = []
    for topic, guideline, source, missing in _ITEMS:
        if isinstance(source, str):
            items.append(_to_write(topic, guideline, source))
        else:
            items.append(_item(topic, guideline, source(run), missing))
    return items


def checklist_section(run: StudyRun, anchor: str) -> Section:
    """The checklist as a report section: a sentence with the counts, then the table."""
    items = checklist_items(run)
    counts = {s: sum(1 for i in items if i.status == s) for s in (REPORTED, NOT_YET, TO_WRITE)}
    frame = pd.DataFrame([{"item": i.topic, "guideline": i.guideline, "status": i.status, "what": i.detail,
                           "where": i.where} for i in items])
    section = Section("Reporting checklist (CLAIM / TRIPOD+AI)", anchor)
    return section.add(
        Para(f"Modelled on CLAIM (2024) and TRIPOD+AI (2024), filled from this study's files: {counts[REPORTED]} "
             f"item(s) reported (with the file they come from), {counts[NOT_YET]} not yet produced (the command "
             f"is named), {counts[TO_WRITE]} to write by the author (only they know them). A paraphrase of the "
             "guidelines' topics, not a substitute for the official checklists."),
        Table(frame, caption="Reporting checklist"))
