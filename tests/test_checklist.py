"""The reporting checklist, filled from hand-made study folders (no training)."""

from __future__ import annotations

import json
from pathlib import Path

from hpstudy.report import load_run, write_report
from hpstudy.report.checklist import NOT_YET, REPORTED, TO_WRITE, checklist_items
from tests.test_report import make_fake_study

STATS = {"normalizer": {"strategy": "dataset", "mean": 120.0, "std": 60.0}, "fitted_on": "train",
         "class_names": ["covid", "normal"], "positive_class": "covid", "image_size": [64, 64], "channels": 1,
         "counts": {"train": 100, "val": 20}, "positives": {"train": 50, "val": 10}}
SELECTION = {"top_k": 3, "seeds": 3, "winner": "02", "single_run_winner": "02", "rank_changed": False,
             "sentence": "Trial 02 wins on 3 seeds: mean val_auc 0.89 (sd 0.01).", "candidates": []}
THRESHOLD = {"policy": "sensitivity", "target": 0.95, "value": 0.3125,
             "source": "validation predictions of the re-evaluation runs (train only)", "n_val": 60}


def _by_topic(run_dir: Path) -> dict[str, object]:
    return {item.topic: item for item in checklist_items(load_run(run_dir))}


def _complete_study(root: Path) -> Path:
    run = make_fake_study(root, "full", leaks=2)
    (run / "data_stats.json").write_text(json.dumps(STATS))
    best = json.loads((run / "final" / "best_config.json").read_text())
    (run / "final" / "best_config.json").write_text(json.dumps({**best, "selection": SELECTION,
                                                                 "threshold": THRESHOLD}))
    metrics_path = run / "evaluation" / "final" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["calibration"] = {"method": "temperature", "temperature": 1.5, "fitted_on": "validation predictions",
                              "brier": 0.12, "brier_ci95": [0.1, 0.15], "ece": 0.05, "ece_ci95": [0.03, 0.08],
                              "bins": 15, "binning": "15 equal-width bins"}
    metrics_path.write_text(json.dumps(metrics))
    ledger = run / "evaluation" / "test_ledger.jsonl"
    with open(ledger, "a", encoding="utf-8") as handle:
        for entry in ({"kind": "probe", "model": "final", "model_sha256": "0" * 64, "dataset": "test",
                       "status": "completed"},
                      {"model": "final", "model_sha256": "0" * 64, "dataset": "hospital-b", "status": "completed"}):
            handle.write(json.dumps(entry) + "\n")
    (run / "evaluation" / "final" / "probes.json").write_text(json.dumps({
        "flagged": True, "regions": {"center": 0.5, "border": 0.1, "fill": "each image's mean"}, "n_test": 50,
        "verdicts": ["Occlusion: test ROC AUC 0.910 unmasked ...: flagged.", "Grad-CAM mass: ...", "Lung masks: ..."]}))
    return run


def test_a_complete_study_reports_everything_it_knows(tmp_path: Path) -> None:
    items = _by_topic(_complete_study(tmp_path))
    reported = {topic for topic, item in items.items() if item.status == REPORTED}
    assert reported == {"Data source", "Preprocessing", "Data partitions", "Leakage between partitions", "Model",
                        "Hyperparameter search and budget", "Model selection", "Final training", "Test set used once",
                        "Performance with uncertainty", "Operating point (threshold) and its source", "Calibration",
                        "External validation", "Shortcut probes (robustness)", "Failure analysis and explanation",
                        "Software, versions and seed"}
    assert {t for t, i in items.items() if i.status == TO_WRITE} >= {"Intended use and clinical role",
                                                                     "Reference standard", "Patient-level separation"}
    assert items["Data partitions"].detail == "train 100 (50 covid); val 20 (10 covid); test 50"
    assert items["Data partitions"].where == "data_stats.json"
    assert "ffffffffffffffff" in items["Data source"].detail and items["Data source"].where == "study.yaml"
    assert items["Leakage between partitions"].detail.startswith("2 image pair(s) shared by train and val")
    assert "; 0 across all splits incl. test" in items["Leakage between partitions"].detail
    assert items["Model selection"].detail == SELECTION["sentence"]
    assert items["Operating point (threshold) and its source"].detail.startswith("policy sensitivity 0.95: 0.312; "
                                                                                 "source: validation predictions")
    assert items["Calibration"].detail == ("final: Brier 0.120 [0.100, 0.150], ECE 0.050 [0.030, 0.080] (15 "
                                           "equal-width bins); temperature 1.500 fitted on validation predictions")
    assert items["External validation"].detail == "final on hospital-b"
    single = items["Test set used once"].detail
    assert single.startswith("completed test evaluations: final 1x; 0 forced") and "1 probe run(s)" in single
    assert "ROC AUC 0.910 [0.850, 0.960] on 50 images" in items["Performance with uncertainty"].detail
    assert items["Shortcut probes (robustness)"].detail.startswith("final: FLAGGED. Occlusion:")
    assert items["Shortcut probes (robustness)"].where == "evaluation/final/probes.json"
    assert "tensorflow 2.21.0" in items["Software, versions and seed"].detail


def test_a_study_before_finalize_says_what_is_not_yet_done(tmp_path: Path) -> None:
    items = _by_topic(make_fake_study(tmp_path, "early", finalized=False, evaluated=False))
    for topic in ("Model selection", "Final training", "Test set used once", "Performance with uncertainty",
                  "Calibration", "External validation", "Shortcut probes (robustness)", "Preprocessing"):
        assert items[topic].status == NOT_YET, topic
    assert items["Shortcut probes (robustness)"].detail == "run `hpstudy probe` after `hpstudy evaluate`"
    assert items["Data partitions"].status == NOT_YET  # no data_stats.json in this folder
    assert items["Hyperparameter search and budget"].status == REPORTED
    assert "random search (max_trials 4), objective val_auc" in items["Hyperparameter search and budget"].detail
    assert "3 completed trial(s) of 4" in items["Hyperparameter search and budget"].detail


def test_the_fixed_threshold_and_a_single_run_selection_are_reported_as_such(tmp_path: Path) -> None:
    items = _by_topic(make_fake_study(tmp_path, "plain"))
    assert items["Operating point (threshold) and its source"].detail == \
        "fixed 0.5 (not chosen on validation predictions)"
    assert "not re-evaluated with several seeds" in items["Model selection"].detail
    assert items["Calibration"].status == NOT_YET


def test_the_report_shows_the_checklist_and_the_probes(tmp_path: Path) -> None:
    run = _complete_study(tmp_path / "runs")
    (run / "evaluation" / "final" / "probes.png").write_bytes((run / "final" / "curves.png").read_bytes())
    result = write_report([run], out_dir=tmp_path / "report")
    html = result.html.read_text()
    assert "Reporting checklist (CLAIM / TRIPOD+AI)" in html and "16 item(s) reported" in html
    assert "Shortcut probes of the final model on the 50 test images: FLAGGED" in html
    assert "final_probes.png" in result.markdown.read_text()
    assert "2 evaluation record(s) and 1 probe record(s) (not evaluations)" in html
    assert not any("hpstudy probe" in note for note in result.missing)
