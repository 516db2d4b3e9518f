"""Tests of hpstudy.report: the comparison computed on hand-made tables, and reports of fake study runs.

``make_fake_study`` builds a study run directory by hand (no training): study.yaml, study.json,
trials.csv, a best-trial history.csv, final/ and finetune/ records, evaluation/ with metrics and
figures, a ledger line, and explore/ figures. The browser test reuses it.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hpstudy._io import format_duration
from hpstudy.errors import StudyError
from hpstudy.report import compare_oracles, compatibility_notes, load_run, study_curve, write_report
from hpstudy.report.compare import spearman
from hpstudy.report.document import format_cell

# ---------------------------------------------------------------- fake study runs

_PNG_CACHE: dict[str, bytes] = {}


def tiny_png(text: str = "fig") -> bytes:
    """A small real PNG (drawn once with matplotlib, then reused)."""
    if "png" not in _PNG_CACHE:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(2.4, 1.6), dpi=50)
        axis = figure.subplots()
        axis.plot([0, 1, 2], [0, 1, 0.5])
        axis.set_title("fake figure")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        _PNG_CACHE["png"] = buffer.getvalue()
    return _PNG_CACHE["png"]


def trial(trial_id: str, score: float | None, seconds: float, epochs: int, status: str = "COMPLETED",
          **hps: Any) -> dict[str, Any]:
    """One trials.csv row; hyperparameters given without the ``hp_`` prefix."""
    row: dict[str, Any] = {"trial_id": trial_id, "status": status, "score": score,
                           "best_epoch": max(epochs - 1, 1), "epochs_run": epochs, "seconds": seconds}
    row.update({f"hp_{k}": v for k, v in hps.items()})
    if score is not None:
        row.update({"loss": 0.4, "auc": score + 0.02, "val_loss": 0.5, "val_auc": score})
    row["message"] = "ValueError: out of memory" if status == "FAILED" else None
    return row


DEFAULT_TRIALS = [
    trial("00", 0.80, 10.0, 5, learning_rate=1e-3, optimizer="adam", dropout=0.2),
    trial("01", None, 4.0, 1, status="FAILED", learning_rate=1e-1, optimizer="sgd", dropout=0.5),
    trial("02", 0.90, 10.0, 5, learning_rate=1e-4, optimizer="adam", dropout=0.3),
    trial("03", 0.85, 10.0, 5, learning_rate=3e-4, optimizer="sgd", dropout=0.1),
]


def make_fake_study(root: Path, name: str, *, oracle: str = "random", family: str = "baseline_cnn",
                    trials: list[dict[str, Any]] | None = None, fingerprint: str = "f" * 64,
                    finalized: bool = True, evaluated: bool = True, gradcam: bool = True,
                    explore: bool = True, finetuned: bool = False, leaks: int = 0,
                    boundary: list[dict[str, Any]] | None = None) -> Path:
    """Write a fake study run directory ``root/name`` and return it."""
    run = root / name
    run.mkdir(parents=True)
    config = {"name": name, "family": family, "data": "data/chest_xray", "seed": 7,
              "oracle": {"type": oracle, "max_trials": 4}, "objective": {"name": "val_auc", "direction": "max"},
              "early_stopping": {"monitor": "val_auc", "patience": 3}}
    frozen = {"config": config, "seed": 7, "data_fingerprint": fingerprint,
              "versions": {"python": "3.11.9", "tensorflow": "2.21.0", "keras": "3.15.0", "keras-tuner": "1.4.8"},
              "frozen_at": "2025-01-01T00:00:00+00:00"}
    (run / "study.yaml").write_text(yaml.safe_dump(frozen, sort_keys=False))
    rows = DEFAULT_TRIALS if trials is None else trials
    table = pd.DataFrame(rows)
    table.to_csv(run / "trials.csv", index=False)
    state = {"status": "finished", "planned_trials": 4, "trials_done": len(rows),
             "boundary": boundary if boundary is not None else [
                 {"hyperparameter": "learning_rate", "side": "low", "limit": 1e-4, "best_value": 1e-4,
                  "trials_at_limit": "1/3", "extendable": True, "suggested_limit": 1e-5,
                  "suggestion": "lower the low end from 0.0001 to 1e-05"}]}
    (run / "study.json").write_text(json.dumps(state))
    pd.DataFrame({"path_a": [f"train/a{i}.png" for i in range(leaks)],
                  "path_b": [f"val/b{i}.png" for i in range(leaks)]}).to_csv(run / "leaks.csv", index=False)
    done = table[table["status"] == "COMPLETED"]
    if not done.empty:
        best_id = str(done.sort_values("score", ascending=False).iloc[0]["trial_id"])
        history = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "loss": [0.7, 0.5, 0.4, 0.35, 0.3],
                                "auc": [0.6, 0.75, 0.85, 0.9, 0.92], "val_loss": [0.7, 0.55, 0.5, 0.5, 0.52],
                                "val_auc": [0.6, 0.72, 0.8, 0.9, 0.89]})
        (run / "tuner" / f"trial_{best_id}").mkdir(parents=True)
        history.to_csv(run / "tuner" / f"trial_{best_id}" / "history.csv", index=False)
    if explore:
        (run / "explore").mkdir()
        for figure in ("samples.png", "counts.png", "extra_view.png"):
            (run / "explore" / figure).write_bytes(tiny_png())
        pd.DataFrame({"split": ["train", "val"], "images": [100, 20]}).to_csv(run / "explore" / "stats.csv",
                                                                              index=False)
        (run / "explore" / "leaks.csv").write_text("path_a,path_b,distance\n")
    if finalized:
        _finalize(run, finetuned)
    if evaluated:
        _evaluate(run, name, gradcam)
    return run


def _finalize(run: Path, finetuned: bool) -> None:
    (run / "final").mkdir()
    (run / "final" / "best_config.json").write_text(json.dumps({
        "trial_id": "02", "score": 0.9, "objective": "val_auc", "hyperparameters": {"learning_rate": 1e-4,
                                                                                    "optimizer": "adam"},
        "best_epoch": 4, "epochs": 5, "scaled_by_data_ratio": True, "train_val_images": 120,
        "normalizer_fitted_on": "train", "model": "model.keras", "model_sha256": "0" * 64}))
    (run / "final" / "curves.png").write_bytes(tiny_png())
    if finetuned:
        (run / "finetune").mkdir()
        attempts = [{"learning_rate": 1e-4, "epochs_run": 2, "unfrozen_layers": 10, "dropped": True,
                     "dropped_at_epoch": 2, "reason": "loss jumped", "final_loss": 0.9, "reference_loss": 0.3,
                     "improved": False, "history": {"loss": [0.3, 0.9]}},
                    {"learning_rate": 1e-5, "epochs_run": 3, "unfrozen_layers": 10, "dropped": False,
                     "dropped_at_epoch": None, "reason": None, "final_loss": 0.25, "reference_loss": 0.3,
                     "improved": True, "history": {"loss": [0.3, 0.27, 0.25]}}]
        (run / "finetune" / "lr_backoff.json").write_text(json.dumps(
            {"kept": "finetuned", "attempts": attempts, "policy": "top_blocks", "reference": {"loss": 0.3}}))
        (run / "finetune" / "curves.png").write_bytes(tiny_png())


def _evaluate(run: Path, name: str, gradcam: bool) -> None:
    folder = run / "evaluation" / "final"
    folder.mkdir(parents=True)
    result = {"model": "final", "model_sha256": "0" * 64, "n_test": 50, "threshold": 0.5,
              "metrics": {"accuracy": 0.86, "roc_auc": 0.91, "sensitivity": 0.9, "specificity": 0.8},
              "ci95": {"accuracy": [0.8, 0.92], "roc_auc": [0.85, 0.96], "sensitivity": [0.8, 0.97],
                       "specificity": [0.7, 0.9]},
              "leaks_across_all_splits": 0, "forced": False}
    (folder / "metrics.json").write_text(json.dumps(result))
    for figure in ("confusion_matrix.png", "roc.png", "samples.png"):
        (folder / figure).write_bytes(tiny_png())
    if gradcam:
        for group in ("tp", "tn", "fp"):
            (folder / f"gradcam_{group}.png").write_bytes(tiny_png())
    entry = {**result, "time": "2025-01-02T00:00:00+00:00", "user": "tester", "study": name,
             "model_file": str(run / "final" / "model.keras")}
    (run / "evaluation" / "test_ledger.jsonl").write_text(json.dumps(entry) + "\n")


class _SectionParser(HTMLParser):
    """Collects, for each <section id>, whether it has text or images beyond its heading."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict[str, Any]] = []
        self.sections: dict[str, bool] = {}
        self.in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.stack.append({"id": dict(attrs).get("id"), "content": False})
        elif tag in ("h2", "h3", "h4", "h5") and self.stack:
            self.in_heading = True
        elif tag in ("img", "table") and self.stack:
            self._mark()

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            done = self.stack.pop()
            self.sections[done["id"]] = done["content"]
            if done["content"] and self.stack:
                self.stack[-1]["content"] = True
        elif tag in ("h2", "h3", "h4", "h5"):
            self.in_heading = False

    def handle_data(self, data: str) -> None:
        if self.stack and not self.in_heading and data.strip():
            self._mark()

    def _mark(self) -> None:
        self.stack[-1]["content"] = True


def section_contents(html_text: str) -> dict[str, bool]:
    """Section id -> has content beyond its heading."""
    parser = _SectionParser()
    parser.feed(html_text)
    return parser.sections


# ---------------------------------------------------------------- compare_oracles: known answers

def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


@pytest.fixture
def two_studies() -> dict[str, pd.DataFrame]:
    a = _table(DEFAULT_TRIALS)
    b = _table([trial("0", 0.70, 5.0, 3, learning_rate=1e-2, optimizer="adam", dropout=0.4),
                trial("1", 0.895, 5.0, 3, learning_rate=2e-4, optimizer="adam", dropout=0.3),
                trial("2", 0.92, 5.0, 3, learning_rate=1e-4, optimizer="sgd", dropout=0.2)])
    return {"A": a, "B": b}


def test_best_so_far_curves_on_all_three_axes(two_studies: dict[str, pd.DataFrame]) -> None:
    data = compare_oracles(two_studies, margin=0.03, oracles={"A": "random", "B": "bayesian"})
    a = data.studies["A"]
    np.testing.assert_allclose(a.best_so_far, [0.80, 0.80, 0.90, 0.90])
    np.testing.assert_allclose(a.cum_seconds, [10, 14, 24, 34])
    np.testing.assert_allclose(a.cum_epochs, [5, 6, 11, 16])
    assert a.trial_ids == ["00", "01", "02", "03"]
    assert (a.n_trials, a.n_completed, a.n_failed) == (4, 3, 1)
    assert (a.best_score, a.best_trial, a.total_seconds, a.total_epochs) == (0.90, "02", 34.0, 16.0)
    assert a.label == "A (random)"


def test_budget_to_come_within_margin(two_studies: dict[str, pd.DataFrame]) -> None:
    data = compare_oracles(two_studies, margin=0.03)
    assert data.overall_best == pytest.approx(0.92) and data.overall_best_study == "B"
    a, b = data.studies["A"], data.studies["B"]
    assert (a.trials_to_margin, a.seconds_to_margin, a.epochs_to_margin) == (3, 24.0, 11.0)
    assert (b.trials_to_margin, b.seconds_to_margin, b.epochs_to_margin) == (2, 10.0, 6.0)
    tight = compare_oracles(two_studies, margin=0.01)
    assert tight.studies["A"].seconds_to_margin is None and tight.studies["A"].epochs_to_margin is None
    assert (tight.studies["B"].seconds_to_margin, tight.studies["B"].epochs_to_margin) == (15.0, 9.0)
    assert "never: A" in tight.summary[1]
    row = tight.table().set_index("study").loc["A"]
    assert (row["trials to margin"], row["time to margin"], row["epochs to margin"]) == ("never", "never", "never")


def test_summary_names_the_winner_of_each_measure() -> None:
    # Same score; X is cheap in epochs but slow, Y fast but expensive in epochs.
    tables = {"X": _table([trial("0", 0.9, 100.0, 2)]), "Y": _table([trial("0", 0.9, 50.0, 10)])}
    data = compare_oracles(tables, margin=0.0, oracles={"X": "hyperband", "Y": "random"})
    score, seconds, epochs = data.summary
    assert "X (hyperband) and Y (random) tie for the best score, 0.9000" in score
    assert seconds.startswith("Wall-clock time to come within 0 of the overall best (0.9000): Y (random) was fastest")
    assert seconds.index("Y (random) after 50s") < seconds.index("X (hyperband) after 1m40s")
    assert epochs.startswith("Epochs to come within") and "X (hyperband) needed the fewest" in epochs
    assert "X (hyperband) after 2 epochs; Y (random) after 10 epochs" in epochs


def test_trial_order_is_numeric_start_order_and_running_trials_are_left_out() -> None:
    rows = [trial("10", 0.5, 1.0, 1), trial("9", 0.9, 1.0, 1), trial("2", 0.7, 1.0, 1),
            trial("11", None, 0.0, 0, status="RUNNING")]
    curve = study_curve("s", _table(rows))
    assert curve.trial_ids == ["2", "9", "10"]
    np.testing.assert_allclose(curve.best_so_far, [0.7, 0.9, 0.9])


def test_minimize_and_failed_trials_spend_budget_without_counting_for_best() -> None:
    rows = [trial("0", None, 30.0, 4, status="FAILED"), trial("1", 0.5, 10.0, 2), trial("2", 0.3, 10.0, 2),
            trial("3", 0.1, 5.0, 1, status="INVALID")]
    data = compare_oracles({"loss": _table(rows)}, direction="min", margin=0.0)
    curve = data.studies["loss"]
    assert math.isnan(curve.best_so_far[0])
    np.testing.assert_allclose(curve.best_so_far[1:], [0.5, 0.3, 0.3])
    assert (curve.best_score, curve.seconds_to_margin, curve.epochs_to_margin) == (0.3, 50.0, 8.0)
    assert "Only one study" in data.summary[-1]


def test_no_completed_trial_gives_none_everywhere() -> None:
    data = compare_oracles({"s": _table([trial("0", None, 3.0, 1, status="FAILED")])})
    assert data.overall_best is None and data.studies["s"].best_score is None
    assert data.summary == ["Best score: no study has a completed trial with a score yet."]


def test_hyperparameter_relations(two_studies: dict[str, pd.DataFrame]) -> None:
    data = compare_oracles(two_studies)
    relations = {r.name: r for r in data.hyperparameters}
    assert list(relations) == ["learning_rate", "optimizer", "dropout"]
    lr = relations["learning_rate"]
    assert lr.kind == "numeric" and len(lr.points) == 6  # failed trial left out
    assert lr.spearman["B"] == pytest.approx(-1.0)  # lower learning rate, better score in B
    optimizer = relations["optimizer"]
    assert optimizer.kind == "categorical" and optimizer.spearman == {}
    means = optimizer.mean_by_value
    assert means is not None
    assert means.loc["adam", "A"] == pytest.approx(0.85) and means.loc["sgd", "B"] == pytest.approx(0.92)


def test_boolean_hyperparameter_is_a_category() -> None:
    rows = [trial(str(i), 0.5 + i / 10, 1.0, 1, augment=bool(i % 2)) for i in range(4)]
    relation = compare_oracles({"s": _table(rows)}).hyperparameters[0]
    assert relation.kind == "categorical"
    assert relation.mean_by_value is not None
    assert relation.mean_by_value.loc["True", "s"] == pytest.approx(0.7)


def test_spearman_with_known_answers() -> None:
    assert spearman(pd.Series([1, 2, 3, 4]), pd.Series([1, 3, 2, 4])) == pytest.approx(0.8)
    assert spearman(pd.Series([1, 2]), pd.Series([1, 2])) is None
    assert spearman(pd.Series([1, 1, 1]), pd.Series([1, 2, 3])) is None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="direction must be 'max' or 'min', but got 'up'"):
        compare_oracles({"s": _table(DEFAULT_TRIALS)}, direction="up")
    with pytest.raises(ValueError, match="at least one trials table"):
        compare_oracles({})
    with pytest.raises(ValueError, match="margin must be >= 0"):
        compare_oracles({"s": _table(DEFAULT_TRIALS)}, margin=-1)


def test_formatting_helpers() -> None:
    assert (format_duration(42), format_duration(185), format_duration(3725), format_duration(None)) == \
        ("42s", "3m05s", "1h02m", "never")
    assert (format_cell(0.123456), format_cell(5.0), format_cell(float("nan")), format_cell(None)) == \
        ("0.1235", "5", "", "")


def test_figures_draw_scatter_categories_and_curves(tmp_path: Path) -> None:
    from hpstudy.report import plot_best_so_far, plot_hyperparameters, plot_learning_curves

    rng = np.random.default_rng(0)
    rows = [trial(str(i), float(rng.uniform(0.2, 0.6)), 60.0, 3, learning_rate=float(10 ** rng.uniform(-5, -1)),
                  units=int(rng.choice([32, 64])), optimizer=str(rng.choice(["adam", "sgd"])))
            for i in range(12)]
    data = compare_oracles({"loss": _table(rows)}, direction="min", oracles={"loss": "random"})
    assert [r.mean_by_value is None for r in data.hyperparameters] == [True, False, False]
    paths = [plot_best_so_far(data, tmp_path / "best.png", objective="val_loss"),
             plot_hyperparameters(data, tmp_path / "hp.png", objective="val_loss"),
             plot_learning_curves(pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4]}), tmp_path / "curves.png",
                                  title="no validation columns")]
    assert all(p is not None and p.read_bytes().startswith(b"\x89PNG") for p in paths)
    empty = compare_oracles({"s": _table([trial("0", None, 1.0, 1, status="FAILED")])})
    assert plot_hyperparameters(empty, tmp_path / "none.png") is None


# ---------------------------------------------------------------- loading runs

def test_compatibility_notes(tmp_path: Path) -> None:
    a = load_run(make_fake_study(tmp_path, "a", explore=False, finalized=False, evaluated=False))
    b = load_run(make_fake_study(tmp_path, "b", explore=False, finalized=False, evaluated=False))
    c = load_run(make_fake_study(tmp_path, "c", family="resnet50v2_head", fingerprint="0" * 64,
                                 explore=False, finalized=False, evaluated=False))
    ok, notes = compatibility_notes([a, b])
    assert ok and "same training/validation data" in notes[0] and "baseline_cnn" in notes[0]
    ok, notes = compatibility_notes([a, c])
    assert not ok
    assert any("model family" in n and "c: resnet50v2_head" in n for n in notes)
    assert any("fingerprint" in n for n in notes)


def test_load_run_accepts_run_dir_frozen_yaml_and_study_yaml(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_fake_study(tmp_path / "studies", "rnd", explore=False, finalized=False, evaluated=False)
    assert load_run(run).name == "rnd" and load_run(run / "study.yaml").paths.root == run
    loaded = load_run(run)
    assert loaded.trials is not None and loaded.trials["trial_id"].tolist() == ["00", "01", "02", "03"]
    source = tmp_path / "studies" / "rnd.yaml"
    source.write_text("name: rnd\n")
    fake = types.ModuleType("hpstudy.config")
    fake.load_study = lambda path: types.SimpleNamespace(study_dir=Path(path).with_suffix(""))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hpstudy.config", fake)
    from_yaml = load_run(source)
    assert from_yaml.paths.root == run and from_yaml.command_target == str(source)
    assert load_run(types.SimpleNamespace(study_dir=run, name="rnd")).paths.root == run


def test_load_run_refuses_what_is_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="not a study run directory"):
        load_run(tmp_path)
    with pytest.raises(StudyError, match="no study at"):
        load_run(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- write_report

@pytest.fixture(scope="module")
def comparison_report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A report of two studies: 'rnd' with every artefact, 'bayes <b>' with trials only."""
    root = tmp_path_factory.mktemp("studies")
    full = make_fake_study(root, "rnd", finetuned=False)
    bare = make_fake_study(root, "bayes <b>", oracle="bayesian", explore=False, finalized=False, evaluated=False,
                           trials=[trial("0", 0.7, 5.0, 3, learning_rate=1e-2, optimizer="adam", dropout=0.4),
                                   trial("1", 0.92, 5.0, 3, learning_rate=1e-4, optimizer="sgd", dropout=0.2)],
                           boundary=[])
    out = tmp_path_factory.mktemp("report")
    return write_report([full, bare], out_dir=out)


def test_report_files_and_order(comparison_report: Any) -> None:
    result = comparison_report
    assert result.html.name == "report.html" and result.markdown.name == "report.md"
    assert result.studies == ["rnd", "bayes <b>"] and result.comparable is True
    assert result.comparison.overall_best_study == "bayes <b>"
    text = result.html.read_text()
    positions = [text.index(f'id="{anchor}"') for anchor in ("comparison", "study-rnd", "study-bayes-b")]
    assert positions == sorted(positions)
    assert all(p.is_file() and p.read_bytes().startswith(b"\x89PNG") for p in result.figures)


def test_report_html_is_self_contained_and_escaped(comparison_report: Any) -> None:
    text = comparison_report.html.read_text()
    assert "bayes &lt;b&gt;" in text and "bayes <b>" not in text
    assert 'src="data:image/png;base64,' in text
    assert not re.search(r'<img src="(?!data:)', text)
    assert "Generated " in text and 'class="toc"' in text and 'id="hpstudy-check"' in text


def test_every_section_has_content(comparison_report: Any) -> None:
    sections = section_contents(comparison_report.html.read_text())
    assert len(sections) > 20
    assert [name for name, has in sections.items() if not has] == []


def test_missing_artefacts_are_said_explicitly(comparison_report: Any) -> None:
    missing = " ".join(comparison_report.missing)
    assert "Not finalized yet: run `hpstudy finalize" in missing
    assert "Not evaluated yet" in missing and "hpstudy evaluate" in missing
    assert "No data exploration outputs found" in missing
    assert "No Grad-CAM figure for false negatives" in comparison_report.html.read_text()
    assert "Not applicable: fine-tuning applies to the transfer-learning family" in comparison_report.html.read_text()


def test_report_content_of_the_full_study(comparison_report: Any) -> None:
    text = comparison_report.html.read_text()
    explore_order = [text.index(caption) for caption in ("Images per split and class", "Sample training images",
                                                         "Extra view")]
    assert explore_order == sorted(explore_order)
    for expected in ("Task 1 — Data exploration", "Tasks 2–3 — Hyperparameter search", "Final model",
                     "Task 4 — Test evaluation and explanation", "Extra view", "tensorflow", "2.21.0",
                     "Statistics per split and class (stats.csv)", "Exploration leak check over all splits: no image",
                     "lower the low end from 0.0001 to 1e-05", "Test ledger", "tester", "95% CI low",
                     "ValueError: out of memory", "Best score: bayes &lt;b&gt; (bayesian) found the best score"):
        assert expected in text, expected


def test_markdown_links_the_pngs(comparison_report: Any) -> None:
    markdown = comparison_report.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links and all((comparison_report.out_dir / link).is_file() for link in links)
    assert "comparison/best_so_far.png" in links
    assert "## Oracle comparison" in markdown and "| trial_id | score |" in markdown


def test_single_study_report_with_finetuning_and_warnings(tmp_path: Path) -> None:
    run = make_fake_study(tmp_path, "transfer", family="resnet50v2_head", finetuned=True, leaks=2, gradcam=False)
    result = write_report([run], out_dir=tmp_path / "out")
    text = result.html.read_text()
    assert result.comparison is None and 'id="comparison"' not in text
    assert "kept: the fine-tuned model" in text and "1e-05" in text
    assert "2 image pair(s) appear in more than one split" in text
    assert "No Grad-CAM figures for the final model yet" in text
    assert [name for name, has in section_contents(text).items() if not has] == []


def test_different_families_are_flagged_in_the_report(tmp_path: Path) -> None:
    a = make_fake_study(tmp_path, "a", explore=False, finalized=False, evaluated=False)
    b = make_fake_study(tmp_path, "b", family="resnet50v2_head", explore=False, finalized=False, evaluated=False)
    result = write_report([a, b], out_dir=tmp_path / "out")
    assert result.comparable is False
    assert "Warning: the studies differ in their model family" in result.html.read_text()


def test_study_never_run_is_reported_not_crashed(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    (run / "trials.csv").write_text("trial_id,status,score,best_epoch,epochs_run,seconds\n")
    result = write_report([run], out_dir=tmp_path / "out")
    text = result.html.read_text()
    assert "No frozen configuration" in text and "No trial has completed with a score yet" in text
    assert [name for name, has in section_contents(text).items() if not has] == []


def test_studies_with_clashing_names_get_distinct_folders_and_anchors(tmp_path: Path) -> None:
    a = make_fake_study(tmp_path, "a b", explore=False, finalized=False, evaluated=False)
    b = make_fake_study(tmp_path, "a-b", explore=False, finalized=False, evaluated=False)
    result = write_report([a, b, a], out_dir=tmp_path / "out")
    assert result.studies == ["a b", "a-b", "a b (2)"]
    assert {p.parent.name for p in result.figures} == {"comparison", "a-b", "a-b-2", "a-b-2-2"}
    ids = re.findall(r'<section id="([^"]+)"', result.html.read_text())
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------- operating point and external sets
def _result(auc: float, threshold: float = 0.3, *, calibrated: bool = True, **extra: Any) -> dict[str, Any]:
    metrics = {"accuracy": 0.8, "roc_auc": auc, "sensitivity": 0.95, "specificity": 0.6}
    result = {"n_test": 40, "threshold": threshold, "metrics": metrics,
              "ci95": {k: [v - 0.1, min(v + 0.05, 1.0)] for k, v in metrics.items()},
              "metrics_at_0_5": {**metrics, "sensitivity": 0.7, "specificity": 0.9},
              "ci95_at_0_5": {"sensitivity": [0.5, 0.85], "specificity": [0.8, 0.97]},
              "threshold_info": {"policy": "sensitivity", "target": 0.95, "value": threshold,
                                 "source": "validation predictions of a sibling", "val_sensitivity": 0.96,
                                 "val_specificity": 0.55},
              "calibration": {"method": "none", "brier": 0.12, "brier_ci95": [0.1, 0.15], "ece": 0.05,
                              "ece_ci95": [0.03, 0.09], "binning": "15 equal-width bins"}, **extra}
    if calibrated:
        result["calibration"].update(method="temperature", temperature=1.8,
                                     before={"brier": 0.2, "brier_ci95": [0.17, 0.22], "ece": 0.15,
                                             "ece_ci95": [0.1, 0.2]})
    return result


def test_operating_tables_are_computed_from_metrics_json() -> None:
    from hpstudy.report.operating_sections import calibration_table, metrics_at_both, side_by_side

    result = _result(0.9)
    both = metrics_at_both(result).set_index("metric")
    assert both.loc["sensitivity"].tolist() == ["0.950 (0.850–1.000)", "0.700 (0.500–0.850)"]
    assert list(both.columns) == ["at threshold 0.3", "at 0.5"]
    cal = calibration_table(result)
    assert cal["probabilities"].tolist() == ["model", "after temperature scaling (T = 1.8)"]
    assert cal["ECE"].tolist() == ["0.150 (0.100–0.200)", "0.050 (0.030–0.090)"]
    assert calibration_table({"metrics": {}}).empty, "an older metrics.json has no calibration"
    table = side_by_side([("final", "test", result), ("final", "hosp", _result(0.7, leaks_with_study=3)),
                          ("final", "old", {"metrics": {"roc_auc": 0.8}, "ci95": {}})])
    assert table["set"].tolist() == ["test", "hosp", "old"] and table["AUC"].tolist()[1:] == [
        "0.700 (0.600–0.750)", "0.800"]
    assert table["leak pairs"].tolist() == ["", 3, ""] and table["Brier"].tolist()[2] == ""


def test_report_of_a_study_with_a_chosen_threshold_and_an_external_set(tmp_path: Path) -> None:
    from hpstudy.report.operating_sections import CAVEAT

    run = make_fake_study(tmp_path, "thr", gradcam=False)
    (run / "evaluation" / "final" / "metrics.json").write_text(json.dumps(_result(0.9, model_sha256="0" * 64)))
    external = run / "evaluation" / "final-hosp"
    external.mkdir()
    (external / "metrics.json").write_text(json.dumps(_result(0.7, leaks_with_study=20)))
    (external / "roc.png").write_bytes(tiny_png())
    with (run / "evaluation" / "test_ledger.jsonl").open("a") as ledger:
        ledger.write(json.dumps({"model": "final", "dataset": "hosp", "status": "completed", "n_test": 40}) + "\n")
    text = write_report([run], out_dir=tmp_path / "out").markdown.read_text()
    assert CAVEAT in text and "Operating point: threshold 0.3 (sensitivity 0.95)" in text
    side = text[text.index("Internal test and external sets side by side"):]
    assert "| final | test | 40 | 0.3 | 0.900 (0.800–0.950)" in side and "| final | hosp | 40 | 0.3 |" in side
    assert "final-hosp_roc.png" in text and "| hosp |" in text[text.index("Test ledger"):]
    assert "Warning: the external set hosp shares 20 image(s) with the study's splits" in text


def test_a_flag_only_at_a_hard_limit_reads_as_settled_not_as_widen(tmp_path: Path) -> None:
    stuck = {"hyperparameter": "kernel_size", "side": "low", "limit": 3, "best_value": 3, "trials_at_limit": "1/3",
             "extendable": False, "suggested_limit": None,
             "suggestion": "cannot lower it past 3, the hard limit of kernel_size for family baseline_cnn"}
    run = make_fake_study(tmp_path / "s", "settled", finalized=False, evaluated=False, boundary=[stuck])
    text = write_report([run], out_dir=tmp_path / "r").markdown.read_text()
    section = text[text.index("#### Boundary check"):]
    assert "Ranges settled: no best value at an extendable range edge (kernel_size is at its hard limit 3)" in section
    assert "widen the range" not in section and "| kernel_size | low | 3 |" in section


def test_the_search_section_states_the_useful_work_fraction_of_timed_trials(tmp_path: Path) -> None:
    rows = [{**trial("0", 0.8, 10.0, 2), "wall_s": 10.0, "useful_s": 6.0},
            {**trial("1", 0.9, 30.0, 3), "wall_s": 30.0, "useful_s": 27.0}]
    timed = make_fake_study(tmp_path / "s", "timed", trials=rows, finalized=False, evaluated=False)
    untimed = make_fake_study(tmp_path / "s", "untimed", finalized=False, evaluated=False)
    text = write_report([timed, untimed], out_dir=tmp_path / "r").markdown.read_text()
    timed_part, untimed_part = text[text.index("## Study: timed"):text.index("## Study: untimed")], \
        text[text.index("## Study: untimed"):]
    assert "Useful-work fraction: 0.82 (" in timed_part, "(6 + 27) / (10 + 30)"
    assert "Useful-work fraction" not in untimed_part, "a study run before timings were recorded shows none"
