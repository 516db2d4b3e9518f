"""Oracle comparison with repeats at an equal budget (``hpstudy compare``).

The statistics are checked on fake scores and hand-made trials tables (known answers, no training); the
budget stop on Keras Tuner's own tuner with a two-weight model; the refusals through the command line
before anything is written; and one small real comparison on the sample images (2 studies, 2 repeats,
32 px), interrupted after its first round and resumed with the same call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hpstudy.cli import main
from hpstudy.config import SearchBudget, load_study
from hpstudy.errors import ConfigError, StudyError
from hpstudy.report.build import SINGLE_RUN_NOTE
from hpstudy.report.repeats import Repeat, band, budget_statement, compare_repeats, repeat_run
from hpstudy.report.significance import bootstrap_mean_difference, holm, mann_whitney, repeats_needed, smallest_p
from tests.test_study import write_study

RANDOM = {"type": "random", "max_trials": 1, "epochs": 2}
BAYESIAN = {"type": "bayesian", "max_trials": 1, "epochs": 2, "num_initial_points": 1}
HYPERBAND = {"type": "hyperband", "max_epochs": 2, "factor": 3, "iterations": 1}


def trials(scores: list[float | None], *, epochs: int = 2, seconds: float = 1.0) -> pd.DataFrame:
    """A trials table in start order; None is a failed trial (it spends budget, has no score)."""
    return pd.DataFrame({
        "trial_id": [f"{i:02d}" for i in range(len(scores))],
        "status": ["FAILED" if s is None else "COMPLETED" for s in scores],
        "score": scores, "epochs_run": epochs, "seconds": seconds})


def oracle_repeats(rng: np.random.Generator, centre: float, repeats: int, spread: float = 0.03) -> list[pd.DataFrame]:
    return [trials(list(centre + spread * rng.standard_normal(4))) for _ in range(repeats)]


# ---------------------------------------------------------------- statistics on fake scores
def test_identical_distributions_give_no_significant_difference() -> None:
    rng = np.random.default_rng(7)
    data = compare_repeats({"A": oracle_repeats(rng, 0.85, 6), "B": oracle_repeats(rng, 0.85, 6)},
                           objective="val_auc")
    assert data.verdict.startswith("No significant difference between A and B with 6 repeats")
    assert data.pairs[0].p_holm > 0.05 and "val_auc" in data.verdict
    same = [trials([0.8, 0.9]), trials([0.7, 0.85])]
    tied = compare_repeats({"A": same, "B": same})
    assert tied.pairs[0].test.p == 1.0 and tied.pairs[0].test.rank_biserial == 0.0
    assert tied.pairs[0].mean_difference == 0.0


def test_a_clear_difference_is_found_with_the_expected_sign() -> None:
    rng = np.random.default_rng(3)
    better, worse = oracle_repeats(rng, 0.90, 5, spread=0.005), oracle_repeats(rng, 0.70, 5, spread=0.005)
    data = compare_repeats({"worse": worse, "better": better})
    pair = data.pairs[0]
    assert (pair.a, pair.b) == ("worse", "better")
    assert pair.test.rank_biserial == -1.0 and pair.test.common_language == 0.0 and pair.mean_difference < -0.15
    assert pair.test.p == pytest.approx(2 / 252) and pair.test.method == "exact"
    low, high = pair.interval
    assert low < high < 0, "the bootstrap interval of mean(worse) - mean(better) is below 0"
    assert data.verdict.startswith("With 5 repeats: better beat worse (P(better better) = 1.00")
    losses = compare_repeats({"low": worse, "high": better}, direction="min")
    assert losses.pairs[0].test.rank_biserial == 1.0, "for a loss the lower scores are the better ones"
    assert "low beat high" in losses.verdict


def test_too_few_repeats_are_said_with_the_smallest_possible_p() -> None:
    rng = np.random.default_rng(5)
    two = compare_repeats({"A": oracle_repeats(rng, 0.9, 3, 0.001), "B": oracle_repeats(rng, 0.6, 3, 0.001)})
    assert two.pairs[0].test.p == pytest.approx(0.1), "the samples do not overlap: the smallest p for R=3"
    assert "smallest p-value this test can give is 0.1, so" in two.verdict
    assert "at least 4 repeats per oracle are needed" in two.verdict
    three = compare_repeats({n: oracle_repeats(rng, c, 3, 0.001) for n, c in (("A", 0.9), ("B", 0.7), ("C", 0.5))})
    assert "0.1 (0.3 after Holm over 3 pairs)" in three.verdict and "at least 5 repeats" in three.verdict
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(5, 5) == pytest.approx(2 / 252)
    assert (repeats_needed(1), repeats_needed(3)) == (4, 5)


def test_mann_whitney_holm_and_bootstrap_known_answers() -> None:
    test = mann_whitney([3.0, 4.0, 5.0], [1.0, 2.0, 4.0])  # U of A: 3 + 3 + 3 - one tie (4 vs 4) counts 1/2
    assert test.u == 7.5 and test.common_language == pytest.approx(7.5 / 9)
    assert test.method == "normal approximation (ties)" and 0 < test.p < 1
    assert mann_whitney([], [1.0]).p is None
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert bootstrap_mean_difference([1.0], [2.0, 3.0]) is None
    low, high = bootstrap_mean_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], seed=1)
    assert low < 1.0 < high
    with pytest.raises(ValueError, match="direction must be 'max' or 'min'"):
        mann_whitney([1.0], [2.0], direction="up")


def test_interquartile_band_on_a_hand_example() -> None:
    curves = [((1, 2), (0.5, 0.7)), ((1, 3), (0.6, 0.6)), ((2, 4), (0.4, 0.9)), ((1, 2), (0.8, 0.8))]
    runs = []
    for index, (epochs, scores) in enumerate(curves):
        table = trials(list(scores), epochs=1).assign(epochs_run=np.diff((0, *epochs)))
        runs.append(repeat_run("A", index, table))
    result = band(runs, [0, 1, 2, 3, 4], axis="epochs")
    assert np.isnan(result.median[:2]).all(), "no band until every repeat has a result (repeat 2 ends at 2)"
    # at 2 epochs the repeats hold 0.7, 0.6, 0.4, 0.8; at 4 (and after) 0.7, 0.6, 0.9, 0.8
    assert result.median[2:].tolist() == pytest.approx([0.65, 0.65, 0.75])
    assert result.q25[2:].tolist() == pytest.approx([0.55, 0.55, 0.675])
    assert result.q75[2:].tolist() == pytest.approx([0.725, 0.725, 0.825])
    with pytest.raises(ValueError, match="axis must be one of epochs, seconds"):
        band(runs, [0, 1], axis="trials")


def test_budget_counts_trials_started_within_it_and_margins() -> None:
    a = [trials([0.6, None, 0.8, 0.95], epochs=3), trials([0.7, 0.9], epochs=3)]
    b = [trials([0.85, 0.86], epochs=3), trials([0.5, 0.5], epochs=3)]
    data = compare_repeats({"A": [Repeat(t, seed=i, budget_reached=True) for i, t in enumerate(a)],
                            "B": [Repeat(b[0], budget_reached=True), Repeat(b[1], budget_reached=False)]},
                           budget=("epochs", 7), margin=0.06)
    first = data.runs["A"][0]
    assert (first.n_trials, first.n_left_out, first.spent_epochs) == (3, 1, 9.0), "started at 0, 3, 6 < 7; 9 not"
    assert first.final_best == 0.8 and data.overall_best == 0.9
    assert [r.epochs_to_margin for r in data.runs["A"]] == [None, 6.0]
    assert [r.epochs_to_margin for r in data.runs["B"]] == [3.0, None]
    assert data.margin_table()["never"].tolist() == ["1 of 2", "1 of 2"]
    statement = " ".join(budget_statement(data))
    assert "once its trials had spent 7 epochs" in statement and "6–9 epochs" in statement
    assert "1 trial(s) started after" in statement and "B repeat 1 (spent 6)" in statement
    assert data.run_table()["budget reached"].tolist() == ["yes", "yes", "yes", "no (ended first)"]


def test_bad_statistics_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two oracles"):
        compare_repeats({"A": [trials([0.5])]})
    with pytest.raises(ValueError, match="budget kind in epochs, seconds"):
        compare_repeats({"A": [trials([0.5])], "B": [trials([0.6])]}, budget=("trials", 3))


# ---------------------------------------------------------------- the budget stop in the tuner
def _tiny_model(hp: Any) -> Any:
    import keras

    hp.Float("x", 0.0, 1.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _search(folder: Path, budget: SearchBudget, max_trials: int = 50) -> Any:
    import keras_tuner as kt

    from hpstudy.search.tuners import RandomSearchTuner

    tuner = RandomSearchTuner(_tiny_model, objective=kt.Objective("val_loss", "min"), directory=str(folder),
                              project_name="tuner", seed=1, max_trials=max_trials, budget=budget)
    x, y = np.ones((4, 2)), np.ones((4, 1))
    tuner.search(x, y, validation_data=(x, y), epochs=2, verbose=0)
    return tuner


def test_a_search_stops_at_its_epoch_budget_and_resumes_to_a_larger_one(tmp_path: Path) -> None:
    tuner = _search(tmp_path, SearchBudget("epochs", 3))
    assert len(tuner.oracle.trials) == 2, "2 epochs < 3: a second trial starts, and finishes past the budget"
    assert tuner.budget_reached and tuner.budget_spent() == 4.0
    again = _search(tmp_path, SearchBudget("epochs", 3))
    assert len(again.oracle.trials) == 2 and again.trials_run_here == 0 and again.budget_reached
    more = _search(tmp_path, SearchBudget("epochs", 5))
    assert more.trials_run_here == 1 and more.budget_spent() == 6.0
    limited = _search(tmp_path / "limited", SearchBudget("epochs", 100), max_trials=1)
    assert len(limited.oracle.trials) == 1 and not limited.budget_reached, "the oracle's own limit ended it first"


def test_budget_values_are_checked() -> None:
    for amount in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="budget: epochs must be a finite number > 0"):
            SearchBudget("epochs", amount)
    with pytest.raises(ConfigError, match="kind must be one of epochs, seconds"):
        SearchBudget("trials", 3)


# ---------------------------------------------------------------- refusals (nothing written)
def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(["compare", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code)
    return code, capsys.readouterr().err.strip()


def test_refusals_say_one_line_and_write_nothing(sample_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "studies"
    a = write_study(folder, "a", sample_data, RANDOM)
    b = write_study(folder, "b", sample_data, BAYESIAN)
    before = _files(tmp_path)
    usage = [("--repeats", "0", "--budget-epochs", "4"), ("--repeats", "2", "--budget-epochs", "0"),
             ("--repeats", "2", "--budget-seconds", "-3"), ("--repeats", "2"),
             ("--repeats", "2", "--budget-epochs", "4", "--budget-seconds", "60")]
    for args in usage:
        code, err = _cli(capsys, str(a), str(b), *args)
        assert code == 2 and err.splitlines()[-1].startswith("hpstudy compare: error: "), args
    assert "--repeats: must be a whole number >= 1, but got '0'" in _cli(capsys, str(a), str(b), *usage[0])[1]

    def refused(*studies: Path, match: str) -> None:
        code, err = _cli(capsys, *map(str, studies), "--repeats", "2", "--budget-epochs", "4")
        assert code == 1 and len(err.splitlines()) == 1 and match in err, err

    refused(a, match="give at least 2 studies to compare, but got 1")
    refused(a, a, match="study name a given twice")
    (folder / "head.yaml").write_text("family: resnet50v2_head\nhyperparameters:\n  learning_rate: "
                                      "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    other_family = write_study(folder, "r", sample_data, RANDOM, family="resnet50v2_head", search_space="head.yaml")
    refused(a, other_family, match="differ in their model family (a: baseline_cnn, r: resnet50v2_head)")
    fewer = tmp_path / "fewer"
    dropped = sorted(sample_data.glob("train/*/*.png"))[0]
    for image in (p for p in sorted(sample_data.glob("*/*/*.png")) if p != dropped):
        target = fewer / image.relative_to(sample_data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(image)
    other_data = write_study(folder, "c", fewer, BAYESIAN)
    refused(a, other_data, match="differ in their training/validation data (fingerprint)")
    assert _files(tmp_path) - before == {folder / "head.yaml", folder / "r.yaml", folder / "c.yaml",
                                         *_files(fewer), fewer}, "a refused comparison wrote something"


def test_repeat_configuration_seed_directory_and_raised_oracle_limit(sample_data: Path, tmp_path: Path) -> None:
    from hpstudy.repeats import make_budget, repeat_config, repeat_seed

    random = load_study(write_study(tmp_path, "rs", sample_data, RANDOM))
    hyperband = load_study(write_study(tmp_path, "hb", sample_data, HYPERBAND))
    second = repeat_config(random, 1, make_budget(epochs=6.5))
    assert second.study_dir == tmp_path / "rs" / "repeat-1" and random.study_dir == tmp_path / "rs"
    assert second.seed == repeat_seed(3, 1, study="rs") != repeat_config(random, 0, make_budget(epochs=6.5)).seed
    assert repeat_config(hyperband, 1, make_budget(epochs=6.5)).seed != second.seed, "each study its own seeds"
    assert second.oracle.max_trials == 7, "one trial per epoch of the budget: the oracle cannot end first"
    assert repeat_config(hyperband, 0, make_budget(epochs=6.5)).oracle.iterations == 7
    assert repeat_config(random, 0, make_budget(seconds=2)).oracle.max_trials == 20
    assert second.to_dict()["budget"] == {"epochs": 6.5} and "budget" not in random.to_dict()


def test_the_api_refuses_bad_arguments(tmp_path: Path) -> None:
    from hpstudy.repeats import compare_studies, make_budget, repeat_seed

    with pytest.raises(ConfigError, match="--repeats must be a whole number >= 1, but got 0"):
        compare_studies(["a.yaml", "b.yaml"], repeats=0, budget_epochs=3)
    with pytest.raises(ConfigError, match="give exactly one budget.*but got neither"):
        compare_studies(["a.yaml", "b.yaml"], repeats=2)
    with pytest.raises(ConfigError, match="--budget-seconds must be a finite number > 0, but got 0"):
        make_budget(seconds=0)
    assert repeat_seed(3, 0, study="a") != repeat_seed(3, 1, study="a") != repeat_seed(3, 1, study="b")
    assert repeat_seed(3, 1, study="a") == repeat_seed(3, 1, study="a") < 2**31


# ---------------------------------------------------------------- a real comparison, interrupted and resumed
def test_compare_runs_repeats_at_equal_budget_and_resumes_after_an_interruption(
        sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpstudy.repeats as repeats
    from hpstudy import compare_studies

    folder = tmp_path / "studies"
    studies = [write_study(folder, "rs", sample_data, RANDOM), write_study(folder, "bo", sample_data, BAYESIAN)]
    real, calls = repeats.run_study, []

    def interrupted(config: Any, **kwargs: Any) -> Any:
        calls.append(config.study_dir)
        if len(calls) == 3:  # Ctrl-C once the first round (repeat 0 of both studies) is done
            raise KeyboardInterrupt
        return real(config, **kwargs)

    monkeypatch.setattr(repeats, "run_study", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare_studies(studies, repeats=2, budget_epochs=1, margin=0.05)
    assert calls[:2] == [folder / "rs" / "repeat-0", folder / "bo" / "repeat-0"], "rounds: repeat 0 of each first"
    kept = {name: (folder / name / "repeat-0" / "trials.csv").read_bytes() for name in ("rs", "bo")}
    monkeypatch.setattr(repeats, "run_study", real)

    outcome = compare_studies(studies, repeats=2, budget_epochs=1, margin=0.05)
    assert outcome.trials_run == {"rs": [0, 1], "bo": [0, 1]}, "finished repeats are kept, the others run"
    for name in ("rs", "bo"):
        assert (folder / name / "repeat-0" / "trials.csv").read_bytes() == kept[name]
        for index in range(2):
            run = folder / name / f"repeat-{index}"
            state, frozen = (yaml.safe_load((run / f).read_text()) for f in ("study.json", "study.yaml"))
            assert state["budget_reached"] and state["trials_done"] == 1
            assert state["budget_spent"] == 2, "the trial started within the budget finished past it"
            assert frozen["seed"] == repeats.repeat_seed(3, index, study=name)
            assert frozen["config"]["budget"] == {"epochs": 1}
            assert frozen["config"]["run_dir"] == str(run)
    assert outcome.data.scores["rs"].n == 2 and len(outcome.data.pairs) == 1
    assert "No significant difference between rs and bo with 2 repeats" in outcome.verdict
    html = outcome.report.html.read_text()
    for text in ("Verdict: No significant difference", "Equal budget", "Pairwise tests", "P(A better)"):
        assert text in html
    assert {p.name for p in outcome.report.figures} == {"best_so_far_epochs.png", "best_so_far_seconds.png"}
    assert outcome.report.out_dir == folder / "compare-rs-bo"

    (folder / "bo.yaml").write_text((folder / "bo.yaml").read_text().replace("- 32", "- 40"))
    with pytest.raises(StudyError, match=r"repeat-0 ran with other settings \(then -> now: image_size: \[32, 32\] "
                                         r"-> \[40, 40\]"):
        compare_studies(studies, repeats=2, budget_epochs=1)


def test_a_single_run_comparison_says_it_is_one_run_per_oracle(tmp_path: Path) -> None:
    from hpstudy.report import write_report
    from tests.test_report import make_fake_study

    runs = [make_fake_study(tmp_path, "a"), make_fake_study(tmp_path, "b", oracle="bayesian")]
    result = write_report(runs, out_dir=tmp_path / "out")
    text = result.markdown.read_text()
    assert SINGLE_RUN_NOTE in text and "Single run per oracle" in result.html.read_text()
    assert text.index('<a id="comparison"') < text.index("Single run per oracle") < text.index(
        '<a id="comparison-summary"')


@pytest.mark.slow
def test_a_killed_compare_command_resumes_and_keeps_finished_repeats(sample_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    studies = [write_study(folder, "rs", sample_data, RANDOM), write_study(folder, "bo", sample_data, BAYESIAN)]
    command = [sys.executable, "-m", "hpstudy.cli", "compare", *map(str, studies), "--repeats", "2",
               "--budget-epochs", "3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = folder / "rs" / "repeat-0" / "study.json"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if first.exists() and yaml.safe_load(first.read_text()).get("status") == "finished" and \
                    (folder / "bo" / "repeat-0" / "tuner").exists():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stdout.read().decode()[-3000:]
    kept = (folder / "rs" / "repeat-0" / "trials.csv").read_bytes()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "rs (random) repeat 1/2, seed" in rerun.stdout and "finished before, kept" in rerun.stdout
    assert (folder / "rs" / "repeat-0" / "trials.csv").read_bytes() == kept
    assert "Report written to" in rerun.stdout and (folder / "compare-rs-bo" / "report.html").is_file()
    for name in ("rs", "bo"):
        for index in range(2):
            state = yaml.safe_load((folder / name / f"repeat-{index}" / "study.json").read_text())
            assert state["status"] == "finished" and state["budget_reached"], (name, index)
    search = subprocess.run([sys.executable, "-m", "hpstudy.cli", "search", str(studies[0]), "--overwrite"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert search.returncode == 0 and "keeping" in search.stdout, search.stdout[-2000:] + search.stderr[-2000:]
    assert (folder / "rs" / "repeat-0" / "trials.csv").read_bytes() == kept, "--overwrite of the study kept its repeats"
    assert (folder / "rs" / "trials.csv").is_file()
