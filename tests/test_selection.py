"""Top-k re-evaluation: the winner on fake runs, ``confirm`` on hand-made studies with a fake trainer (resume,
refusal, too few trials), and one real re-evaluation of a tiny study on the sample X-rays through finalize."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpstudy.cli import main
from hpstudy.config import SelectionConfig, load_study
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import BestConfig, read_best_config, read_selection, update_state, write_best_config, write_frozen
from hpstudy.report.assets import Assets
from hpstudy.report.runs import load_run
from hpstudy.report.selection_section import selection_points, selection_section
from hpstudy.selection import (
    RunResult,
    best_of_history,
    choose_for_finalize,
    choose_winner,
    confirm_study,
    median_epoch,
    plan_runs,
    read_runs,
    record_in_best_config,
    reevaluation_seed,
    t_interval,
)
from hpstudy.study import study_status
from hpstudy.trials import write_trials_csv
from tests.test_study import write_study


def _runs(rows: list[tuple[str, float | None, int | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial_id", "score", "best_epoch"])


def _three(trial: str, scores: tuple[float, ...], epochs: tuple[int, ...] = (5, 6, 7)) -> list[tuple]:
    return [(trial, s, e) for s, e in zip(scores, epochs)]


# --------------------------------------------------------------------------- the winner on fake runs
def test_a_known_ranking_change_is_detected_and_said_plainly() -> None:
    search = {"0007": 0.912, "0003": 0.905, "0001": 0.899}  # the search's order: 0007 won on one run
    runs = _runs(_three("0007", (0.859, 0.871, 0.883)) + _three("0003", (0.875, 0.884, 0.893), (4, 6, 9))
                 + _three("0001", (0.85, 0.86, 0.87)) + [("0099", 0.99, 1)])  # 0099: not a candidate, ignored
    selection = choose_winner(search, runs, direction="max", top_k=3, seeds=3)
    assert (selection.winner, selection.single_run_winner, selection.rank_changed) == ("0003", "0007", True)
    assert [c.trial_id for c in selection.candidates] == ["0003", "0007", "0001"]
    assert selection.sentence.startswith("trial 0007 was best in the search (0.912) but ranks 2nd of 3 after "
                                         "re-evaluation (mean 0.871 ± 0.012); trial 0003 wins (0.884 ± 0.009)")
    assert "overlap" in selection.sentence  # [0.862, 0.906] and [0.841, 0.901]: within seed noise
    winner = selection.candidate("0003")
    assert winner.search_score == 0.905 and winner.n == 3 and winner.median_best_epoch == 6
    record = selection.to_dict()
    assert set(record) == {"top_k", "seeds", "winner", "single_run_winner", "rank_changed", "sentence", "candidates"}
    assert set(record["candidates"][0]) == {"trial_id", "search_score", "mean", "sd", "ci95", "n",
                                            "median_best_epoch"}
    assert json.loads(json.dumps(record)) == record


def test_the_search_winner_that_keeps_its_rank_and_a_minimized_objective() -> None:
    search = {"0002": 0.30, "0005": 0.32}  # val_loss: lower is better
    runs = _runs(_three("0002", (0.31, 0.33, 0.35)) + _three("0005", (0.40, 0.41, 0.42)))
    selection = choose_winner(search, runs, direction="min", top_k=2, seeds=3)
    assert selection.winner == "0002" and not selection.rank_changed
    assert selection.sentence == ("trial 0002 was best in the search (0.300) and stays best after re-evaluation "
                                  "(mean 0.330 ± 0.020); runner-up trial 0005 (0.410 ± 0.010)")
    flipped = choose_winner(search, runs, direction="max", top_k=2, seeds=3)
    assert flipped.winner == "0005" and flipped.rank_changed


def test_intervals_and_spread_match_a_hand_computation() -> None:
    low, high = t_interval([0.80, 0.84, 0.88])  # mean 0.84, sd 0.04, t(0.975, 2) = 4.3027
    half = 4.302652729911275 * 0.04 / math.sqrt(3)
    assert (low, high) == pytest.approx((0.84 - half, 0.84 + half))
    assert (low, high) == pytest.approx((0.7406, 0.9394), abs=1e-4)
    assert t_interval([0.8]) is None and t_interval([]) is None
    selection = choose_winner({"0001": 0.9}, _runs([("0001", 0.80, 3), ("0001", float("nan"), None),
                                                    ("0001", 0.84, 4), ("0001", 0.88, 8)]),
                              direction="max", top_k=1, seeds=4)
    only = selection.candidates[0]
    assert only.n == 3 and only.mean == pytest.approx(0.84) and only.sd == pytest.approx(0.04)
    assert only.ci95 == pytest.approx((low, high)) and only.median_best_epoch == 4
    single = choose_winner({"0001": 0.9}, _runs([("0001", 0.8, 3)]), direction="max", top_k=1, seeds=1)
    assert single.candidates[0].sd is None and single.candidates[0].ci95 is None
    assert "re-evaluated over 1 run(s) it scores 0.800" in single.sentence


def test_median_best_epoch_rounds_half_up() -> None:
    assert median_epoch([4, 5]) == 5 and median_epoch([2, 3, 4, 5]) == 4  # 4.5 -> 5, 3.5 -> 4
    assert median_epoch([3, 5, 8]) == 5 and median_epoch([6.0]) == 6 and median_epoch([]) is None
    assert median_epoch([7, float("nan"), None]) == 7


def test_no_scored_run_is_an_error_and_a_run_scores_like_the_search() -> None:
    with pytest.raises(StudyError, match="no re-evaluation run has a score"):
        choose_winner({"0001": 0.9}, _runs([("0001", None, None)]), direction="max", top_k=1, seeds=1)
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "val_auc": [0.7, 0.9, 0.9, 0.8], "val_loss": [0.6, 0.5, 0.4, 0.45]})
    assert best_of_history(history, objective="val_auc", direction="max") == (0.9, 2)  # the first best epoch
    assert best_of_history(history, objective="val_loss", direction="min") == (0.4, 3)
    assert best_of_history(history, objective="val_recall", direction="max") == (None, None)


def test_run_seeds_are_fixed_new_and_planned_seed_by_seed() -> None:
    from hpstudy.search.tuners import trial_seed

    seeds = {reevaluation_seed(3, trial, index) for trial in ("0000", "0001") for index in range(3)}
    assert len(seeds) == 6 and reevaluation_seed(3, "0001", 2) == reevaluation_seed(3, "0001", 2)
    assert trial_seed(3, "0000") not in seeds and trial_seed(3, "0001") not in seeds
    assert reevaluation_seed(4, "0001", 0) != reevaluation_seed(3, "0001", 0)
    plan = plan_runs(["0003", "0007"], 2, 3)
    assert [(p.trial_id, p.seed_index) for p in plan] == [("0003", 0), ("0007", 0), ("0003", 1), ("0007", 1)]


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("override, message", [
    ("selection.top_k=0", r"selection\.top_k: must be >= 1, but got 0"),
    ("selection.seeds=0", r"selection\.seeds: must be >= 1, but got 0"),
    ("selection.top_k=2.5", r"selection\.top_k: must be a whole number, but got 2\.5"),
    ("selection.seeds=many", r"selection\.seeds: must be a whole number, but got 'many'"),
    ("selection.topk=3", r"unknown key 'topk'; valid keys in selection: top_k, seeds"),
    ("selection=3", r"selection: must be a mapping such as \{top_k: \.\.\., seeds: \.\.\.\}"),
])
def test_bad_selection_settings_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    path = write_study(tmp_path, "bad", tmp_path / "data", {"type": "random", "max_trials": 2, "epochs": 1})
    with pytest.raises(ConfigError, match=message):
        load_study(path, overrides=[override])


def test_selection_defaults_to_todays_behaviour_and_reads_yaml(tmp_path: Path) -> None:
    oracle = {"type": "random", "max_trials": 2, "epochs": 1}
    plain = load_study(write_study(tmp_path, "plain", tmp_path / "data", oracle))
    assert plain.selection == SelectionConfig(1, 1) and plain.selection.is_default
    assert plain.to_dict()["selection"] == {"top_k": 1, "seeds": 1}
    chosen = load_study(write_study(tmp_path, "chosen", tmp_path / "data", oracle,
                                    selection={"top_k": 3, "seeds": "2"}))
    assert chosen.selection == SelectionConfig(3, 2) and not chosen.selection.is_default


# --------------------------------------------------------------------------- confirm on hand-made studies
ORACLE = {"type": "random", "max_trials": 4, "epochs": 3}
SEARCH_SCORES = {"0000": 0.80, "0001": 0.90, "0002": None, "0003": 0.85}  # 0002 failed


def _hand_made_study(tmp_path: Path, **extra: object) -> tuple[Path, StudyPaths]:
    """A searched study without training: frozen config, Keras Tuner trial files, trials.csv, study.json."""
    path = write_study(tmp_path / "studies", "hand", tmp_path / "data", ORACLE, **extra)
    config = load_study(path)
    paths = StudyPaths(config.study_dir)
    write_frozen(paths, {"config": config.to_dict(), "seed": config.seed, "data_fingerprint": "f" * 64,
                         "versions": {}, "frozen_at": "2025-01-01T00:00:00+00:00"})
    for number, (trial_id, score) in enumerate(SEARCH_SCORES.items()):
        trial_dir = paths.trial_dir(trial_id)
        trial_dir.mkdir(parents=True)
        values = {"learning_rate": 0.001 * (number + 1), "base_filters": 4, "n_blocks": 1, "dense_units": 8,
                  "batch_size": 16}
        (trial_dir / "trial.json").write_text(json.dumps({
            "trial_id": trial_id, "status": "FAILED" if score is None else "COMPLETED", "score": score,
            "hyperparameters": {"values": values}}))
        (trial_dir / "hpstudy_trial.json").write_text(json.dumps({"best_epoch": number + 1, "epochs_run": 3,
                                                                  "seconds": 1.0}))
    write_trials_csv(paths.tuner_dir, paths.trials_csv)
    update_state(paths, status="finished")
    return path, paths


class FakeTrainer:
    """Stands in for ``make_trainer``: a score from the learning rate and the seed, no TensorFlow.

    Trial 0000 (search 0.80) scores best on re-evaluation, 0001 (search 0.90) worst: the rank changes.
    """

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[float, int]] = []
        self.fail_at = fail_at

    def __call__(self, config: object) -> object:
        return self.train

    def train(self, values: dict, seed: int) -> RunResult:
        self.calls.append((values["learning_rate"], seed))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("the machine went away")
        base = {0.001: 0.88, 0.002: 0.83, 0.004: 0.86}[round(values["learning_rate"], 3)]
        score = base + (seed % 7) / 1000
        labels = np.array([0, 1, 1, 0, 1])
        return RunResult(score, 2 + seed % 3, 5, 0.5 + len(self.calls) / 100, labels, np.linspace(0.1, 0.9, 5))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTrainer:
    trainer = FakeTrainer()
    monkeypatch.setattr("hpstudy.selection.confirm.make_trainer", trainer)
    return trainer


def test_top_k_larger_than_the_completed_trials_uses_what_exists(tmp_path: Path, fake: FakeTrainer,
                                                                 capsys: pytest.CaptureFixture) -> None:
    path, paths = _hand_made_study(tmp_path)
    selection = confirm_study(path, overrides=["selection.top_k=5", "selection.seeds=2"])
    assert ("selection.top_k is 5 but only 3 completed trial(s) with distinct hyperparameters exist: re-evaluating "
            "those 3") in capsys.readouterr().out
    runs = read_runs(paths)
    assert len(runs) == 6 == len(fake.calls) and set(runs["trial_id"]) == {"0000", "0001", "0003"}
    assert list(runs["trial_id"][:3]) == ["0001", "0003", "0000"]  # seed by seed, in the search's order
    assert selection is not None and selection.winner == "0000" and selection.single_run_winner == "0001"
    assert selection.rank_changed and selection.top_k == 5
    for row in runs.itertuples():
        predictions = pd.read_csv(paths.selection_predictions(row.trial_id, row.seed))
        assert list(predictions.columns) == ["index", "label", "probability"] and list(predictions["index"]) == [
            0, 1, 2, 3, 4]
    record = read_selection(paths)
    assert record["complete"] and record["runs_done"] == record["runs_planned"] == 6
    assert record["settings"] == {"top_k": 5, "seeds": 2} and record["result"]["winner"] == "0000"


def test_a_hyperband_continuation_is_the_same_configuration_and_re_evaluated_once(
        tmp_path: Path, fake: FakeTrainer, capsys: pytest.CaptureFixture) -> None:
    path, paths = _hand_made_study(tmp_path)
    parent = json.loads(paths.trial_json("0000").read_text())
    paths.trial_dir("0004").mkdir()
    paths.trial_json("0004").write_text(json.dumps({**parent, "trial_id": "0004", "score": 0.95, "hyperparameters": {
        "values": {**parent["hyperparameters"]["values"], "tuner/trial_id": "0000", "tuner/epochs": 9}}}))
    write_trials_csv(paths.tuner_dir, paths.trials_csv)
    selection = confirm_study(path, overrides=["selection.top_k=4", "selection.seeds=1"])
    out = capsys.readouterr().out
    assert "trial 0000 has the hyperparameters of trial 0004 (a Hyperband continuation)" in out
    assert "only 3 completed trial(s) with distinct hyperparameters exist" in out
    assert selection is not None and {c.trial_id for c in selection.candidates} == {"0004", "0001", "0003"}
    assert len(fake.calls) == 3


def _snapshot(paths: StudyPaths) -> dict[str, bytes]:
    return {str(p.relative_to(paths.root)): p.read_bytes() for p in sorted(paths.root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_changed_selection_is_refused_with_the_difference_and_nothing_is_written(
        tmp_path: Path, fake: FakeTrainer, capsys: pytest.CaptureFixture) -> None:
    path, paths = _hand_made_study(tmp_path)
    confirm_study(path, overrides=["selection.top_k=2", "selection.seeds=2"])
    before = _snapshot(paths)
    with pytest.raises(StudyError, match=r"holds 4 re-evaluation run\(s\) made with another selection \(runs -> "
                                         r"given: selection\.seeds: 2 -> 3\); keep theirs \(--set selection\.top_k=2 "
                                         r"--set selection\.seeds=2\).*--overwrite"):
        confirm_study(path, overrides=["selection.top_k=2", "selection.seeds=3"])
    assert main(["confirm", str(path), "--set", "selection.top_k=3"]) == 1
    assert _snapshot(paths) == before and len(fake.calls) == 4

    capsys.readouterr()
    again = confirm_study(path)  # no --set: the settings of the runs, nothing is trained again
    assert "using the selection the 4 existing re-evaluation run(s) were made with (top_k 2, seeds 2)" in \
        capsys.readouterr().out
    assert again is not None and again.seeds == 2 and len(fake.calls) == 4

    redone = confirm_study(path, overrides=["selection.top_k=2", "selection.seeds=3"], overwrite=True)
    assert redone is not None and redone.seeds == 3 and len(read_runs(paths)) == 6 and len(fake.calls) == 10


def test_a_failed_confirm_keeps_its_finished_runs_and_the_same_command_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, paths = _hand_made_study(tmp_path, selection={"top_k": 2, "seeds": 2})
    failing = FakeTrainer(fail_at=2)
    monkeypatch.setattr("hpstudy.selection.confirm.make_trainer", failing)
    with pytest.raises(RuntimeError, match="went away"):
        confirm_study(path)
    first = read_runs(paths)
    assert len(first) == 1 and paths.selection_predictions(first["trial_id"][0], first["seed"][0]).is_file()
    record = read_selection(paths)
    assert record["runs_done"] == 1 and not record["complete"]
    assert "The re-evaluation is incomplete" in study_status(path)

    resumed = FakeTrainer()
    monkeypatch.setattr("hpstudy.selection.confirm.make_trainer", resumed)
    selection = confirm_study(path)
    runs = read_runs(paths)
    assert len(resumed.calls) == 3 and len(runs) == 4
    pd.testing.assert_frame_equal(runs.iloc[:1], first)  # the finished run is kept as it was, not run again
    assert selection is not None and read_selection(paths)["complete"]
    status = study_status(path)
    assert "selection: the 2 best trial(s) re-evaluated with 2 new seed(s) each" in status
    assert selection.sentence[1:] in status and "0.90" in status


def test_bad_input_exits_1_and_runs_without_a_score_stop_with_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    path, paths = _hand_made_study(tmp_path)
    assert main(["confirm", str(path), "--set", "selection.top_k=0"]) == 1
    assert "selection.top_k: must be >= 1, but got 0" in capsys.readouterr().err
    assert main(["confirm", str(tmp_path / "studies" / "nope.yaml")]) == 1 and not paths.selection_csv.exists()
    diverging = FakeTrainer()
    monkeypatch.setattr(diverging, "train", lambda values, seed: RunResult(None, None, 1, 0.1, np.zeros(2),
                                                                            np.full(2, np.nan)))
    monkeypatch.setattr("hpstudy.selection.confirm.make_trainer", diverging)
    with pytest.raises(StudyError, match=r"no re-evaluation run of study 'hand' has a score \(val_auc was missing"):
        confirm_study(path, overrides=["selection.top_k=2"])
    assert read_runs(paths)["score"].isna().all() and len(read_runs(paths)) == 2


def test_the_default_selection_re_evaluates_nothing(tmp_path: Path, fake: FakeTrainer,
                                                    capsys: pytest.CaptureFixture) -> None:
    path, paths = _hand_made_study(tmp_path)
    assert confirm_study(path) is None
    assert main(["confirm", str(path)]) == 0
    assert "nothing to re-evaluate" in capsys.readouterr().out and not paths.selection_csv.exists() and not fake.calls
    choice = choose_for_finalize(load_study(path), paths)
    assert (choice.trial_id, choice.best_epoch, choice.record["rank_changed"]) == ("0001", 2, False)
    assert "not re-evaluated" in choice.record["sentence"] and choice.record["candidates"][0]["n"] == 0


def test_finalize_takes_the_winner_at_its_median_epoch_and_records_it(tmp_path: Path, fake: FakeTrainer) -> None:
    path, paths = _hand_made_study(tmp_path, selection={"top_k": 2, "seeds": 3})
    choice = choose_for_finalize(load_study(path), paths)  # runs the re-evaluation first: it has not run
    assert len(fake.calls) == 6 and read_selection(paths)["complete"]
    runs = read_runs(paths)
    winner_epochs = runs.loc[runs["trial_id"] == choice.trial_id, "best_epoch"]
    assert choice.trial_id == choice.record["winner"] == "0003"
    assert choice.best_epoch == median_epoch(winner_epochs.tolist()) and choice.score == 0.85
    write_best_config(paths, BestConfig(trial_id="0003", score=0.85, objective="val_auc", hyperparameters={},
                                        best_epoch=choice.best_epoch, epochs=choice.best_epoch, family="baseline_cnn",
                                        model="model.keras", model_sha256="0" * 64, extra={"threshold": {"value": 1}}))
    record_in_best_config(paths, choice.record)
    stored = read_best_config(paths)
    assert stored.extra["selection"] == choice.record and stored.extra["threshold"] == {"value": 1}
    assert choose_for_finalize(load_study(path), paths).record == choice.record and len(fake.calls) == 6


def test_the_report_shows_the_candidates_or_says_the_winner_rests_on_one_run(tmp_path: Path,
                                                                               fake: FakeTrainer) -> None:
    path, paths = _hand_made_study(tmp_path)
    plain = selection_section(load_run(path), "sel", Assets(tmp_path / "out", "a"))
    assert "chosen on one training run" in plain.blocks[0].text and not plain.children
    selection = confirm_study(path, overrides=["selection.top_k=3", "selection.seeds=2"])
    section = selection_section(load_run(path), "sel", Assets(tmp_path / "out", "b"))
    table = next(b for b in section.blocks if hasattr(b, "frame")).frame
    assert list(table["trial"]) == [c.trial_id for c in selection.candidates] and list(table["n"]) == [2, 2, 2]
    assert any(getattr(b, "text", "").startswith("Trial 0001 was best in the search") for b in section.blocks)
    assert (tmp_path / "out" / "b" / "selection.png").stat().st_size > 0
    points = selection_points(selection.to_dict()["candidates"], read_runs(paths))
    assert sorted(points.groupby("rank").size().tolist()) == [2, 2, 2] and points["rank"].min() == 1


# --------------------------------------------------------------------------- a real re-evaluation
def test_finalize_re_evaluates_a_real_study_and_trains_the_winner_for_its_median_epoch(
        sample_data: Path, tmp_path: Path) -> None:
    from hpstudy.finalize import finalize_study
    from hpstudy.study import run_study

    path = write_study(tmp_path / "studies", "real", sample_data, {"type": "random", "max_trials": 2, "epochs": 2},
                       selection={"top_k": 2, "seeds": 2})
    run_study(path)
    outcome = finalize_study(path)  # confirm has not run: finalize runs it first
    paths = StudyPaths(tmp_path / "studies" / "real")
    runs = read_runs(paths)
    assert len(runs) == 4 and runs["seed"].nunique() == 4 and runs["score"].between(0, 1).all()
    assert set(runs["epochs_run"]) <= {1, 2} and runs["best_epoch"].between(1, 2).all()
    trial_seeds = {json.loads(paths.trial_meta(t).read_text())["seed"] for t in runs["trial_id"]}
    assert not trial_seeds & set(runs["seed"])
    labels = None
    for row in runs.itertuples():
        predictions = pd.read_csv(paths.selection_predictions(row.trial_id, row.seed))
        assert len(predictions) == 20 and predictions["probability"].between(0, 1).all()
        assert labels is None or predictions["label"].tolist() == labels
        labels = predictions["label"].tolist()
    assert sum(labels) == 10
    best = json.loads(paths.best_config.read_text())
    winner = next(c for c in best["selection"]["candidates"] if c["trial_id"] == best["selection"]["winner"])
    assert best["trial_id"] == winner["trial_id"] == outcome.trial_id
    assert best["epochs"] == outcome.epochs == winner["median_best_epoch"]
    assert len(pd.read_csv(paths.final_dir / "history.csv")) == outcome.epochs
    before = paths.selection_csv.read_bytes()
    assert main(["confirm", str(path)]) == 0 and paths.selection_csv.read_bytes() == before  # done: nothing reruns
    assert yaml.safe_load(paths.frozen_config.read_text())["config"]["selection"] == {"top_k": 2, "seeds": 2}
