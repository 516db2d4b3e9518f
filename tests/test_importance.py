"""Tests of the importance and trial views: fANOVA on hand-made trees, planted hyperparameters in fake
trials, conditional hyperparameters, the EDF and parallel-coordinates data, trial curves read from
``history.csv``, and the report section (fake runs, and one real tiny search on the sample images).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hpstudy.report import load_run, write_report
from hpstudy.report.fanova import leaf_boxes, main_effect_fractions, tree_main_effects
from hpstudy.report.hp_axes import hp_axes
from hpstudy.report.importance import MIN_TRIALS, hyperparameter_importance
from hpstudy.report.trial_views import INACTIVE, edf_table, parallel_coordinates, score_edf, trial_curves
from tests.test_report import make_fake_study, trial

SPACE = {
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "batch_size": {"type": "choice", "values": [16, 32, 64]},
    "optimizer": {"type": "choice", "values": ["adam", "sgd", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99},
    "dropout": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.2},
    "use_batchnorm": {"type": "bool"},
}


# ---------------------------------------------------------------- fANOVA of one tree

def tree(nodes: list[tuple[int, float, int, int, float]]) -> SimpleNamespace:
    """A fitted-tree stand-in from (feature, threshold, left, right, value) rows; feature -1 is a leaf."""
    feature, threshold, left, right, value = (np.array(column) for column in zip(*nodes))
    return SimpleNamespace(feature=feature, threshold=threshold, children_left=left, children_right=right,
                           value=value.reshape(-1, 1, 1))


def split_tree(leaves: tuple[float, float, float, float]) -> SimpleNamespace:
    """x0 at 0.5, then x1 at 0.5 on both sides: leaves (x0 low, x1 low), (low, high), (high, low), (high, high)."""
    a, b, c, d = leaves
    return tree([(0, 0.5, 1, 2, 0.0), (1, 0.5, 3, 4, 0.0), (1, 0.5, 5, 6, 0.0),
                 (-1, 0, -1, -1, a), (-1, 0, -1, -1, b), (-1, 0, -1, -1, c), (-1, 0, -1, -1, d)])


UNIT = np.array([[0.0, 1.0], [0.0, 1.0]])


@pytest.mark.parametrize(("leaves", "expected", "variance"), [
    ((0, 0, 1, 1), [1.0, 0.0], 0.25),   # only x0 matters
    ((0, 1, 1, 2), [0.5, 0.5], 0.5),    # additive: equal main effects, no interaction
    ((0, 1, 1, 0), [0.0, 0.0], 0.25),   # XOR: all interaction, no main effect
    ((0, 3, 0, 3), [0.0, 1.0], 2.25),
])
def test_main_effects_of_hand_made_trees(leaves: tuple, expected: list[float], variance: float) -> None:
    fractions, total = tree_main_effects(split_tree(leaves), UNIT)
    assert fractions == pytest.approx(expected, abs=1e-12)
    assert total == pytest.approx(variance)


def test_unequal_cells_weigh_by_their_width() -> None:
    # x0 < 0.25 -> 0, else 1, on [0, 1] x [0, 2]: mean 0.75, variance 0.25 * 0.75; all of it from x0
    boxes, values = leaf_boxes(tree([(0, 0.25, 1, 2, 0.0), (-1, 0, -1, -1, 0.0), (-1, 0, -1, -1, 1.0)]),
                               np.array([[0.0, 1.0], [0.0, 2.0]]))
    assert boxes[:, 0].tolist() == [[0.0, 0.25], [0.25, 1.0]] and values.tolist() == [0.0, 1.0]
    fractions, total = main_effect_fractions(boxes, values, np.array([[0.0, 1.0], [0.0, 2.0]]))
    assert total == pytest.approx(0.1875) and fractions == pytest.approx([1.0, 0.0])


def test_cut_outside_the_box_and_constant_tree() -> None:
    outside = tree([(0, 5.0, 1, 2, 0.0), (-1, 0, -1, -1, 1.0), (-1, 0, -1, -1, 9.0)])
    fractions, total = tree_main_effects(outside, UNIT)  # the right leaf is empty: a constant tree
    assert total == 0.0 and fractions.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="positive width"):
        main_effect_fractions(*leaf_boxes(outside, UNIT), np.array([[0.0, 1.0], [0.5, 0.5]]))


# ---------------------------------------------------------------- importance on fake trials

def fake_trials(score_of: Any, n: int = 40, seed: int = 0, **fixed: Any) -> pd.DataFrame:
    """Trials with every SPACE hyperparameter drawn at random and score = score_of(row) + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n):
        hps = {"learning_rate": 10 ** rng.uniform(-4, -2), "batch_size": int(rng.choice([16, 32, 64])),
               "optimizer": str(rng.choice(["adam", "sgd", "rmsprop"])), "momentum": rng.uniform(0.8, 0.99),
               "dropout": float(rng.choice([0.0, 0.2, 0.4])), "use_batchnorm": bool(rng.integers(2)), **fixed}
        rows.append({"trial_id": f"{index:02d}", "status": "COMPLETED", "score": score_of(hps) + rng.normal(0, 0.005),
                     "best_epoch": 3, "epochs_run": 3, "seconds": 2.0, **{f"hp_{k}": v for k, v in hps.items()}})
    return pd.DataFrame(rows)


PLANTED = {
    "learning_rate": lambda hp: 0.9 - 0.1 * (math.log10(hp["learning_rate"]) + 3) ** 2,
    "optimizer": lambda hp: 0.9 - 0.15 * (hp["optimizer"] == "rmsprop"),
    "dropout": lambda hp: 0.7 + 0.5 * hp["dropout"],
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
@pytest.mark.parametrize("with_space", [True, False])
def test_a_planted_hyperparameter_ranks_first(planted: str, with_space: bool) -> None:
    result = hyperparameter_importance(fake_trials(PLANTED[planted]), space=SPACE if with_space else None)
    assert result.reason is None and not result.few_trials
    assert result.ranking()[0] == planted
    assert result.mean[result.names.index(planted)] > 0.6
    assert result.mean.sum() == pytest.approx(1.0)
    assert result.per_seed.shape == (5, len(result.names)) and np.all(result.sd >= 0) and result.sd.max() > 0
    assert 0.5 < result.main_effect_share <= 1.0 + 1e-9
    assert planted not in result.below_reference() and result.reference[0] < 0.1 < result.mean.max()
    table = result.table()
    assert table["hyperparameter"].iloc[0] == planted and table["importance"].is_monotonic_decreasing


def test_same_seed_same_numbers_other_seed_other_forests() -> None:
    trials = fake_trials(PLANTED["learning_rate"])
    first, again = (hyperparameter_importance(trials, space=SPACE, n_seeds=2) for _ in range(2))
    other = hyperparameter_importance(trials, space=SPACE, n_seeds=2, seed=10)
    assert np.array_equal(first.per_seed, again.per_seed) and not np.array_equal(first.per_seed, other.per_seed)
    assert other.seeds == [10, 11]


def test_inactive_momentum_does_not_take_the_optimizers_importance() -> None:
    # sgd is much worse and momentum does nothing: the momentum column (random where inactive) must
    # not become a proxy for "optimizer is sgd", as a separate "inactive" code would make it.
    result = hyperparameter_importance(fake_trials(lambda hp: 0.9 - 0.2 * (hp["optimizer"] == "sgd")), space=SPACE)
    importance = dict(zip(result.names, result.mean))
    assert result.ranking()[0] == "optimizer" and importance["momentum"] < 0.02
    sgd = int((fake_trials(PLANTED["dropout"])["hp_optimizer"] == "sgd").sum())
    assert result.active["momentum"] == sgd and result.active["learning_rate"] == 40
    assert result.conditional == {"momentum": "optimizer = sgd"}
    row = result.table().set_index("hyperparameter").loc["momentum"]
    assert row["active in trials"] == f"{sgd}/40" and row["acts when"] == "optimizer = sgd"
    assert any("momentum" in line and "replaced by a random one" in line for line in result.notes())
    assert "optimizer" not in result.below_reference()
    assert any(line.startswith("A column of random numbers") for line in result.notes())


def test_missing_inactive_values_and_a_never_active_hyperparameter() -> None:
    trials = fake_trials(PLANTED["learning_rate"])
    with_gaps = trials.assign(hp_momentum=trials["hp_momentum"].where(trials["hp_optimizer"] == "sgd"))
    result = hyperparameter_importance(with_gaps, space=SPACE)
    assert result.ranking()[0] == "learning_rate" and "momentum" in result.names
    no_sgd = fake_trials(PLANTED["learning_rate"], optimizer="adam")
    never = hyperparameter_importance(no_sgd, space=SPACE)
    assert "momentum" not in never.names and "momentum (never active)" in never.not_varied
    assert "optimizer" in never.not_varied and never.ranking()[0] == "learning_rate"
    assert "Left out, having a single value" in " ".join(never.notes())


def test_a_hyperband_configuration_counts_once_at_its_longest_training() -> None:
    trials = fake_trials(PLANTED["learning_rate"], n=12).assign(hb_parent=None)
    continued = trials.iloc[:3].assign(trial_id=["20", "21", "22"], hb_parent=["00", "01", "02"],
                                       score=trials["score"].iloc[:3] + 0.05)
    result = hyperparameter_importance(pd.concat([trials, continued]), space=SPACE, n_seeds=1)
    assert result.n_trials == 12 and result.continued == 3
    assert "3 Hyperband trial(s) continued by a later trial are counted once" in result.notes()[0]
    assert result.warnings() == []
    read_back = pd.concat([trials, continued]).assign(trial_id=lambda f: f["trial_id"].astype(int),
                                                       hb_parent=lambda f: f["hb_parent"].astype(float))
    assert hyperparameter_importance(read_back, space=SPACE, n_seeds=1).continued == 3


def test_too_few_trials_are_skipped_or_flagged() -> None:
    few = hyperparameter_importance(fake_trials(PLANTED["dropout"], n=MIN_TRIALS - 1), space=SPACE)
    assert few.reason is not None and "needs at least 3" in few.reason and few.names == []
    assert few.warnings() == [few.reason]
    flagged = hyperparameter_importance(fake_trials(PLANTED["dropout"], n=8), space=SPACE)
    assert flagged.reason is None and flagged.few_trials
    assert len(flagged.warnings()) == 1 and "Only 8 completed trials for 6" in flagged.warnings()[0]
    assert "unreliable" in flagged.warnings()[0] and not any("unreliable" in n for n in flagged.notes())
    flat = fake_trials(PLANTED["dropout"], n=6).assign(score=0.5)
    assert "same score" in hyperparameter_importance(flat).reason
    failed = fake_trials(PLANTED["dropout"], n=6).assign(status="FAILED")
    assert hyperparameter_importance(failed).n_trials == 0
    with pytest.raises(ValueError, match="n_seeds and n_trees must be >= 1"):
        hyperparameter_importance(flat, n_seeds=0)
    with pytest.raises(ValueError, match="needs the columns trial_id, status and score, but score is/are missing"):
        hyperparameter_importance(flat.drop(columns="score"))


# ---------------------------------------------------------------- axes, parallel coordinates, EDF, curves

def test_axes_from_the_space_and_from_the_values() -> None:
    trials = pd.DataFrame({"hp_lr": [1e-4, 1e-3, 1e-2], "hp_units": [32, 64.0, 32], "hp_bn": ["True", True, False],
                           "hp_rate": [0.1, 0.2, 0.3], "hp_empty": [None, None, None]})
    inferred = {a.name: a for a in hp_axes(trials)}
    assert set(inferred) == {"lr", "units", "bn", "rate"}
    assert inferred["lr"].log and inferred["lr"].bounds == (-4.0, -2.0)
    assert inferred["units"].kind == "numeric" and inferred["units"].bounds == (31.5, 64.5)
    assert inferred["bn"].categories == (False, True) and inferred["bn"].encode(trials["hp_bn"]).tolist() == [1, 1, 0]
    assert not inferred["rate"].log and inferred["rate"].pad == 0
    declared = {a.name: a for a in hp_axes(trials, {"units": {"type": "choice", "values": [16, 32, 64]},
                                                    "rate": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}})}
    assert declared["units"].encode(trials["hp_units"]).tolist() == [1, 2, 1]
    assert declared["rate"].bounds == pytest.approx((-0.05, 0.35))  # widened to 0.3, a value found outside


def test_parallel_coordinates_data() -> None:
    rows = [{"trial_id": "a", "status": "COMPLETED", "score": 0.6, "hp_learning_rate": 1e-3, "hp_optimizer": "sgd",
             "hp_momentum": 0.8, "hp_dropout": 0.2, "hp_use_batchnorm": True},
            {"trial_id": "b", "status": "COMPLETED", "score": 0.9, "hp_learning_rate": 1e-2, "hp_optimizer": "rmsprop",
             "hp_momentum": 0.95, "hp_dropout": 0.4, "hp_use_batchnorm": False},
            {"trial_id": "c", "status": "FAILED", "score": None, "hp_learning_rate": 1e-4, "hp_optimizer": "adam",
             "hp_momentum": 0.9, "hp_dropout": 0.0, "hp_use_batchnorm": False}]
    data = parallel_coordinates(pd.DataFrame(rows), space=SPACE, objective="val_auc")
    assert data.trial_ids == ["b", "a"] and data.best == "b"
    positions = data.positions
    assert list(positions.columns) == ["learning_rate", "optimizer", "momentum", "dropout", "use_batchnorm", "val_auc"]
    assert positions.loc["a"].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.5, 1.0, 0.0])
    assert positions.loc["b"].tolist() == pytest.approx([1.0, 1.0, INACTIVE, 1.0, 0.0, 1.0])
    ticks = {axis.name: dict(axis.ticks) for axis in data.axes}
    assert [ticks["learning_rate"][p] for p in (0.0, 0.5, 1.0)] == ["0.0001", "0.001", "0.01"]
    assert ticks["optimizer"] == {0.0: "adam", 0.5: "sgd", 1.0: "rmsprop"}
    assert ticks["momentum"][INACTIVE] == "inactive" and INACTIVE not in ticks["dropout"]
    assert ticks["dropout"] == {0.0: "0", 0.5: "0.2", 1.0: "0.4"}
    assert ticks["val_auc"][0.0] == "0.6" and ticks["val_auc"][1.0] == "0.9"


def test_edf_on_a_hand_example() -> None:
    table = pd.DataFrame([trial("0", 0.7, 1, 1), trial("1", 0.9, 1, 1), trial("2", 0.8, 1, 1),
                          trial("3", 0.8, 1, 1), trial("4", None, 1, 1, status="FAILED")])
    curves = score_edf({"a": table, "none": table.iloc[4:]})
    assert list(curves) == ["a"]
    curve = curves["a"]
    assert curve.values.tolist() == [0.7, 0.8, 0.9] and curve.fraction.tolist() == [0.25, 0.75, 1.0]
    assert (curve.n, curve.at(0.65), curve.at(0.75), curve.at(0.8), curve.at(1.0)) == (4, 0.0, 0.25, 0.75, 1.0)
    assert [curve.quantile(q) for q in (0.25, 0.5, 0.75, 1.0)] == [0.7, 0.8, 0.8, 0.9]
    row = edf_table(curves).iloc[0].to_dict()
    assert row == {"study": "a", "completed trials": 4, "worst": 0.7, "25 %": 0.7, "median": 0.8, "75 %": 0.8,
                   "best": 0.9}
    assert edf_table(curves, "min").iloc[0][["worst", "best"]].tolist() == [0.9, 0.7]


def test_trial_curves_from_histories() -> None:
    good = pd.DataFrame({"epoch": [3, 4], "loss": [0.5, 0.4], "val_auc": [0.7, 0.8]})
    data = trial_curves({"1": good, "2": None, "3": good.drop(columns="val_auc"), "4": good.drop(columns="epoch")},
                        objective="val_auc", best="1")
    assert sorted(data.lines) == ["1", "4"] and data.missing == ["2", "3"] and data.best == "1"
    assert data.lines["1"]["epoch"].tolist() == [3, 4] and data.lines["4"]["epoch"].tolist() == [1, 2]
    assert trial_curves({"2": None}, objective="val_auc", best="2").best is None


# ---------------------------------------------------------------- the report section

def space_study(root: Path, name: str, trials: pd.DataFrame, histories: bool = True, **kwargs: Any) -> Path:
    """A fake study run with SPACE in its frozen configuration and a history.csv per trial."""
    run = make_fake_study(root, name, trials=trials.to_dict("records"), explore=False, finalized=False,
                          evaluated=False, **kwargs)
    frozen = yaml.safe_load((run / "study.yaml").read_text())
    frozen["config"]["search_space"] = {"family": "baseline_cnn", "hyperparameters": SPACE}
    (run / "study.yaml").write_text(yaml.safe_dump(frozen))
    for row in trials.itertuples() if histories else ():
        folder = run / "tuner" / f"trial_{row.trial_id}"
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [row.score - 0.1, row.score - 0.05, row.score]}).to_csv(
            folder / "history.csv", index=False)
    return run


def test_report_has_the_section_and_the_comparison_edf(tmp_path: Path) -> None:
    full = space_study(tmp_path, "planted", fake_trials(PLANTED["learning_rate"], n=24))
    few = space_study(tmp_path, "few", fake_trials(PLANTED["dropout"], n=2), histories=False, oracle="bayesian")
    result = write_report([full, few], out_dir=tmp_path / "out")
    text = result.html.read_text()
    views = text[text.index('id="study-planted-views"'):text.index('id="study-planted-final"')]
    for expected in ("Hyperparameter importance and trial views", "Hyperparameter importance (fANOVA)",
                     "forest seeds 0, 1, 2, 3, 4", "Most important: learning_rate", "optimizer = sgd",
                     "replaced by a random one", "Parallel coordinates of the completed trials",
                     "Distribution of the trial scores (EDF)", "Validation curves of all trials",
                     "red: the best trial", "vs random column", "A column of random numbers"):
        assert expected in views, expected
    other = text[text.index('id="study-few-views"'):text.index('id="study-few-final"')]
    assert "needs at least 3" in other and "trial ends): 00." in other
    assert "1 of 2 completed trials have no val_auc history" in other
    edf = text[text.index('id="comparison-edf"'):text.index('id="study-planted"')]
    assert "planted (random) (24 trials)" not in edf  # legends are in the PNG; the table names the studies
    assert "<td>planted</td><td>24</td>" in edf and "<td>few</td><td>2</td>" in edf
    names = {p.relative_to(result.out_dir).as_posix() for p in result.figures}
    assert {"comparison/score_edf.png", "planted/importance.png", "planted/parallel_coordinates.png",
            "planted/score_edf.png", "planted/trial_curves.png", "few/score_edf.png"} <= names
    assert "few/importance.png" not in names
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures)


def test_a_study_without_completed_trials_says_so(tmp_path: Path) -> None:
    run = make_fake_study(tmp_path, "failed", trials=[trial("0", None, 1.0, 1, status="FAILED", dropout=0.1)],
                          explore=False, finalized=False, evaluated=False)
    text = write_report([run], out_dir=tmp_path / "out").html.read_text()
    assert "No completed trial yet, so there is no importance and no trial view" in text


def test_real_tiny_search_gets_importance_and_every_trials_curve(sample_data: Path, tmp_path: Path) -> None:
    """End to end on the sample images: 3 random-search trials of 1 epoch at 32 px, then the report."""
    from hpstudy.study import run_study
    from tests.test_study import write_study

    study_yaml = write_study(tmp_path / "studies", "tiny", sample_data,
                             {"type": "random", "max_trials": MIN_TRIALS, "epochs": 1})
    run_study(study_yaml, verbose=False)
    run = load_run(study_yaml)
    assert run.trials is not None and (run.trials["status"] == "COMPLETED").sum() == MIN_TRIALS
    result = write_report([study_yaml], out_dir=tmp_path / "out")
    text = result.html.read_text()
    views = text[text.index('id="study-tiny-views"'):text.index('id="study-tiny-final"')]
    assert "Most important:" in views and re.search(r"Only 3 completed trials for \d varied", views)  # flagged
    assert "have no val_auc history" not in views  # every trial's history.csv was found in the tuner folder
    names = {p.name for p in result.figures if p.parent.name == "tiny"}
    assert {"importance.png", "parallel_coordinates.png", "score_edf.png", "trial_curves.png"} <= names
