"""Per-study report sections for the final model and the test evaluation with Grad-CAM (Task 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy.paths import CURVES_FILE, MODELS
from hpstudy.records import is_probe, ledger_entries, read_lr_backoff, read_metrics
from hpstudy.report.assets import Assets, read_json
from hpstudy.report.document import Block, Figure, Note, Para, Section, Table
from hpstudy.report.operating_sections import external_section, finalize_blocks, operating_blocks
from hpstudy.report.probes_sections import probe_blocks
from hpstudy.report.runs import StudyRun
from hpstudy.report.search_sections import key_value_table

__all__ = ["final_section", "test_section"]

_TRANSFER_FAMILY = "resnet50v2_head"
_EVAL_FIGURES = (("confusion_matrix.png", "Confusion matrix on the test split"),
                 ("roc.png", "ROC curve on the test split"),
                 ("samples.png", "Test images with their predictions"),
                 ("reliability.png", "Reliability diagram and histogram of the predicted probabilities on the test "
                                     "split"))
_GROUPS = (("tp", "true positives"), ("tn", "true negatives"), ("fp", "false positives"), ("fn", "false negatives"))
_ATTEMPT_COLUMNS = ("learning_rate", "epochs_run", "unfrozen_layers", "dropped", "dropped_at_epoch", "reason",
                    "final_loss", "reference_loss", "improved")
_LEDGER_COLUMNS = ("time", "kind", "status", "user", "study", "model", "dataset", "model_sha256", "n_test",
                   "forced")


def _figure_or_note(assets: Assets, source: Path, name: str, caption: str, missing: str) -> Block:
    if source.is_file():
        return Figure(assets.copy(source, name), caption)
    return Note(missing)


# ---------------------------------------------------------------- final model

def final_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """The model retrained on train+val (``final/``) and the fine-tuning record (``finetune/``)."""
    section = Section("Final model", anchor)
    if not isinstance(read_json(run.paths.best_config), dict):
        return section.add(Note(f"Not finalized yet: run `hpstudy finalize {run.command_target}` (it writes "
                                "final/best_config.json, model.keras and curves.png"
                                + (", then fine-tunes the backbone)." if run.family == _TRANSFER_FAMILY else ").")))
    section.add(Para("The best configuration retrained on train+val for the epoch count recorded in the search, "
                     "without early stopping or validation data."))
    section.children = [_final(run, f"{anchor}-train", assets), _finetune(run, f"{anchor}-finetune", assets)]
    return section


def _final(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Final training on train+val", anchor)
    record = read_json(run.paths.best_config)
    scaled = " (best epoch scaled by the data ratio)" if record.get("scaled_by_data_ratio") else ""
    section.add(Para(f"Trial {record.get('trial_id')} ({record.get('objective', run.objective)}="
                     f"{_number(record.get('score'))}, best epoch {record.get('best_epoch')}) retrained for "
                     f"{record.get('epochs')} epochs{scaled} on {record.get('train_val_images', '?')} "
                     "train+val images; "
                     f"normalization fitted on {record.get('normalizer_fitted_on', 'train')}."),
                Table(key_value_table(record.get("hyperparameters") or {}, key="hyperparameter"),
                      caption="Hyperparameters of the final model"), *finalize_blocks(record))
    section.add(_figure_or_note(assets, run.paths.final_dir / CURVES_FILE, "final_curves.png",
                                "Training curves of the final model (train+val, no validation data)",
                                f"No final/curves.png in `{run.paths.final_dir}`: run `hpstudy finalize "
                                f"{run.command_target}` again to redraw it."))
    return section


def _finetune(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Fine-tuning with learning-rate back-off", anchor)
    record = read_lr_backoff(run.paths)
    if record is None:
        if run.family not in (None, _TRANSFER_FAMILY):
            return section.add(Para(f"Not applicable: fine-tuning applies to the transfer-learning family "
                                    f"({_TRANSFER_FAMILY}); this study's family is {run.family}."))
        return section.add(Note(f"Not fine-tuned yet: run `hpstudy finalize {run.command_target}` "
                                "(the transfer model is fine-tuned after its head is final)."))
    kept = record.get("kept")
    section.add(Para(f"Policy {record.get('policy')}; {len(record.get('attempts') or [])} attempt(s); kept: "
                     + ("the fine-tuned model." if kept == "finetuned" else
                        "the head model (no attempt improved on it).")))
    attempts = pd.DataFrame(record.get("attempts") or [])
    if not attempts.empty:
        section.add(Table(attempts[[c for c in _ATTEMPT_COLUMNS if c in attempts.columns]],
                          caption="Fine-tuning attempts (learning rate divided by 10 after each failure)"))
    missing = ("No finetune/curves.png: no attempt improved, so no fine-tuned model was saved."
               if kept != "finetuned" else f"No finetune/curves.png in `{run.paths.finetune_dir}`.")
    section.add(_figure_or_note(assets, run.paths.finetune_dir / CURVES_FILE, "finetune_curves.png",
                                "Training curves of the kept fine-tuning attempt", missing))
    return section


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


# ---------------------------------------------------------------- Task 4

def _evaluated_models(run: StudyRun) -> list[str]:
    return [name for name in MODELS if run.paths.metrics_json(name).is_file()]


def test_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """Task 4: metrics with confidence intervals, figures and Grad-CAM of each evaluated model, and the ledger."""
    section = Section("Task 4 — Test evaluation and explanation", anchor)
    models = _evaluated_models(run)
    if not models:
        first = "" if run.paths.best_config.exists() else \
            f"run `hpstudy finalize {run.command_target}`, then "
        section.add(Note(f"Not evaluated yet: {first}run `hpstudy evaluate {run.command_target} --model final` "
                         "(the test split is used once per model)."))
    else:
        section.add(Para(f"Evaluated model(s): {', '.join(models)}. Every test evaluation is recorded in the ledger."))
    section.children = [_model(run, name, f"{anchor}-{name}", assets) for name in models]
    if models:
        section.children.append(external_section(run, f"{anchor}-external", assets))
    section.children.append(_ledger(run, f"{anchor}-ledger"))
    return section


def _metrics_table(result: dict[str, Any]) -> pd.DataFrame:
    metrics, intervals = result.get("metrics") or {}, result.get("ci95") or {}
    rows = []
    for name, value in metrics.items():
        low, high = (list(intervals.get(name) or []) + [None, None])[:2]
        rows.append({"metric": name, "value": value, "95% CI low": low, "95% CI high": high})
    return pd.DataFrame(rows, columns=["metric", "value", "95% CI low", "95% CI high"])


def _model(run: StudyRun, name: str, anchor: str, assets: Assets) -> Section:
    section = Section(f"Model: {name}", anchor)
    folder = run.paths.evaluation_of(name)
    result = read_metrics(run.paths, name) or {}
    forced = " This evaluation was forced (a repeat; see the ledger)." if result.get("forced") else ""
    section.add(Para(f"{result.get('n_test', '?')} test images, threshold {result.get('threshold', 0.5):.4g}; "
                     f"{result.get('leaks_across_all_splits', '?')} leak(s) across all splits.{forced}"),
                Table(_metrics_table(result), caption=f"Test metrics of the {name} model at threshold "
                                                      f"{result.get('threshold', 0.5):.4g} with bootstrap 95% CIs"),
                *operating_blocks(result, name))
    for file_name, caption in _EVAL_FIGURES:
        section.add(_figure_or_note(assets, folder / file_name, f"{name}_{file_name}", f"{caption} ({name} model)",
                                    f"No {file_name} in `{folder}`: run `hpstudy evaluate {run.command_target} "
                                    f"--model {name} --force` to redraw it (recorded in the ledger)."))
    section.add(*_gradcam_blocks(run, name, folder, assets))
    section.add(*probe_blocks(run, name, assets))
    return section


def _gradcam_blocks(run: StudyRun, name: str, folder: Path, assets: Assets) -> list[Block]:
    present = [(g, text) for g, text in _GROUPS if run.paths.gradcam_figure(name, g).is_file()]
    if not present:
        return [Note(f"No Grad-CAM figures for the {name} model yet: run "
                     f"`hpstudy gradcam {run.command_target} --model {name}`.")]
    blocks: list[Block] = [Figure(assets.copy(run.paths.gradcam_figure(name, g), f"{name}_gradcam_{g}.png"),
                                  f"Grad-CAM of {text} ({name} model)") for g, text in present]
    absent = [text for g, text in _GROUPS if (g, text) not in present]
    if absent:
        blocks.append(Para(f"No Grad-CAM figure for {', '.join(absent)}: the test split has no such prediction "
                           "or the figure was not drawn."))
    return blocks


def _ledger(run: StudyRun, anchor: str) -> Section:
    section = Section("Test ledger", anchor)
    path = run.paths.ledger
    entries = ledger_entries(run.paths)
    if not entries:
        return section.add(Note(f"The test ledger `{path}` is empty or missing: the test split has not been read."))
    frame = pd.DataFrame(entries)
    table = frame[[c for c in _LEDGER_COLUMNS if c in frame.columns]].copy()
    if "model_sha256" in table.columns:
        table["model_sha256"] = table["model_sha256"].astype(str).str[:12]
    metrics = frame["metrics"] if "metrics" in frame.columns else pd.Series([None] * len(frame))
    for metric in ("roc_auc", "accuracy"):
        table[metric] = [m.get(metric) if isinstance(m, dict) else None for m in metrics]
    probes = sum(1 for e in entries if is_probe(e))
    section.add(Para(f"{len(entries) - probes} evaluation record(s) and {probes} probe record(s) (not evaluations) "
                     f"in `{path}`."),
                Table(table, caption="Every evaluation on the test split and on external sets, and every shortcut "
                                     "probe (who, when, which model file)"))
    return section
