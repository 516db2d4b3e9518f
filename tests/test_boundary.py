"""Boundary logic: ranges on the hyperparameter types, flags naming their population, hard limits.

Pure functions on hand-made trials tables; no model is trained.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpstudy.boundary import SETTLED, boundary_flags, boundary_lines, extend_space, is_active, settled_sentence
from hpstudy.config import HyperParam, Limits, parse_search_space


def _space(family: str = "baseline_cnn", **hyperparameters: dict) -> object:
    return parse_search_space({"family": family, "hyperparameters": hyperparameters})


def _trials(*rows: dict) -> pd.DataFrame:
    """A trials table: each row's ``score`` and hyperparameter values (as ``hp_<name>`` columns)."""
    records = [{"trial_id": f"{i:02d}", "status": "COMPLETED", "score": row["score"],
                **{f"hp_{k}": v for k, v in row.items() if k != "score"}} for i, row in enumerate(rows)]
    return pd.DataFrame(records)


def _flags(trials: pd.DataFrame, space: object) -> dict[str, dict]:
    return {flag["hyperparameter"]: flag for flag in boundary_flags(trials, space)}


# --------------------------------------------------------------------------- where a value sits
def test_a_short_integer_range_flags_only_its_ends() -> None:
    # issue 12: n_blocks 2..5 (3 steps) with best 3 must not be flagged; 2 is the low end itself.
    space = _space(n_blocks={"type": "int", "low": 2, "high": 5})
    assert _flags(_trials({"score": 0.9, "n_blocks": 3}), space) == {}
    flag = _flags(_trials({"score": 0.9, "n_blocks": 2}), space)["n_blocks"]
    assert flag["side"] == "low" and flag["suggestion"] == "lower the low end from 2 to 1"


def test_a_range_of_five_steps_or_more_also_flags_the_value_next_to_an_end() -> None:
    space = _space(n_blocks={"type": "int", "low": 2, "high": 7})  # 5 steps
    assert _flags(_trials({"score": 0.9, "n_blocks": 3}), space)["n_blocks"]["side"] == "low"
    assert "n_blocks" not in _flags(_trials({"score": 0.9, "n_blocks": 4}), space)
    assert _flags(_trials({"score": 0.9, "n_blocks": 6}), space)["n_blocks"]["side"] == "high"


@pytest.mark.parametrize(("spec", "value", "side"), [
    ({"type": "float", "low": 0.0, "high": 1.0}, 0.09, "low"),  # a float step is 10 % of the width
    ({"type": "float", "low": 0.0, "high": 1.0}, 0.11, None),
    ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, 1.5e-4, "low"),  # 10 % of the log width
    ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, 2e-4, None),
    ({"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}, 0.1, None),  # 3 steps: only the ends
    ({"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}, 0.30000000000000004, "high"),
    ({"type": "choice", "values": [16, 32, 64]}, 32, None),
    ({"type": "choice", "values": [16, 32, 64]}, 64.0, "high"),
    ({"type": "choice", "values": [8, 16, 32, 64, 128, 256]}, 16, "low"),  # 5 steps: next to the end counts
    ({"type": "choice", "values": ["adam", "sgd"]}, "adam", None),  # names have no ends
])
def test_edge_follows_the_step_of_each_range_type(spec: dict, value: object, side: str | None) -> None:
    param = HyperParam("p", **{k: tuple(v) if k == "values" else v for k, v in spec.items()},
                       ordered=spec["type"] == "choice" and not isinstance(spec["values"][0], str))
    assert (param.range.edge(value) if param.range is not None else None) == side


def test_contains_and_cast_check_range_grid_and_type() -> None:
    n_blocks = HyperParam("n_blocks", "int", low=2, high=5)
    assert n_blocks.cast(3.0) == 3 and isinstance(n_blocks.cast(3.0), int)
    assert not n_blocks.contains(3.5) and not n_blocks.contains(6) and not n_blocks.contains(True)
    dropout = HyperParam("dropout", "float", low=0.0, high=0.5, step=0.1)
    assert dropout.contains(0.30000000000000004) and not dropout.contains(0.25)
    units = HyperParam("dense_units", "choice", values=(32, 64), ordered=True)
    assert units.cast(64.0) == 64 and not units.contains(48)
    optimizer = HyperParam("optimizer", "choice", values=("adam", "sgd"))
    assert optimizer.contains("sgd") and not optimizer.contains("nadam")
    flags = HyperParam("flag", "choice", values=(1, 2), ordered=False)
    assert not flags.contains(True), "True == 1 in Python, but it is not one of the values"
    with pytest.raises(ValueError, match=r"0.25 lies outside this study's space \(dropout: float 0..0.5 step 0.1\)"):
        dropout.cast(0.25)


# --------------------------------------------------------------------------- extending a range
@pytest.mark.parametrize(("spec", "side", "expected"), [
    ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "low", "float 1e-05..0.01 log"),
    ({"type": "int", "low": 2, "high": 5}, "high", "int 2..7"),
    ({"type": "float", "low": 0.1, "high": 0.5, "step": 0.1}, "low", "float 0..0.5 step 0.1"),  # grid kept
    ({"type": "choice", "values": [16, 32, 64]}, "low", "choice [8, 16, 32, 64]"),  # geometric
    ({"type": "choice", "values": [3, 5]}, "high", "choice [3, 5, 7]"),  # arithmetic
])
def test_extension_keeps_each_ranges_progression(spec: dict, side: str, expected: str) -> None:
    name = {"float": "dropout" if "step" in spec else "learning_rate", "int": "n_blocks"}.get(spec["type"],
                                                                                           "batch_size")
    space = _space(**{name: spec})
    assert space.extended(name, side).describe() == expected


def test_hard_limits_are_family_aware_and_never_passed() -> None:
    cnn = _space(n_dense={"type": "int", "low": 1, "high": 2}, momentum={"type": "float", "low": 0.9, "high": 0.99},
                 dropout={"type": "float", "low": 0.0, "high": 0.5})
    assert cnn.extended("n_dense", "low") is None, "the baseline CNN keeps at least one dense layer"
    head = _space("resnet50v2_head", n_dense={"type": "int", "low": 1, "high": 2})
    assert head.extended("n_dense", "low").describe() == "int 0..2"
    assert cnn.extended("momentum", "high").describe() == "float 0.9..0.999"
    assert cnn.extended("dropout", "low") is None
    linear_lr = _space(learning_rate={"type": "float", "low": 0.001, "high": 0.01})
    assert linear_lr.extended("learning_rate", "low").low == pytest.approx(0.0005), "0 is open: halfway to it"


def test_cnn_kernels_stay_spatial_and_blocks_stop_at_a_one_pixel_map() -> None:
    cnn = _space(kernel_size={"type": "choice", "values": [3, 5]}, n_blocks={"type": "int", "low": 2, "high": 5})
    assert cnn.extended("kernel_size", "low") is None, "a 1x1 kernel sees no neighbourhood"
    assert cnn.extended("n_blocks", "high").describe() == "int 2..7", "no image size: half the width"
    assert cnn.extended("n_blocks", "high", image_size=(64, 64)).describe() == "int 2..6", "64 px: 6 halvings"
    assert cnn.extended("n_blocks", "high", image_size=(128, 96)).describe() == "int 2..6", "the shorter side"
    at_top = _space(n_blocks={"type": "int", "low": 2, "high": 6})
    flag = boundary_flags(_trials({"score": 0.9, "n_blocks": 6}), at_top, image_size=(64, 64))[0]
    assert flag["extendable"] is False and boundary_lines([flag]) == []


def test_weight_decay_stops_where_decay_no_longer_changes_the_weights() -> None:
    wd = _space(weight_decay={"type": "float", "low": 1e-5, "high": 1e-2, "log": True})
    assert wd.extended("weight_decay", "low").describe() == "float 1e-06..0.01 log"
    at_floor = _space(weight_decay={"type": "float", "low": 1e-6, "high": 1e-2, "log": True})
    assert at_floor.extended("weight_decay", "low") is None, "below 1e-6 it is adam, which the space has"
    assert at_floor.extended("weight_decay", "high").describe() == "float 1e-06..0.1 log"


def test_a_flag_at_a_hard_limit_says_why_it_cannot_be_extended() -> None:
    space = _space(n_dense={"type": "int", "low": 1, "high": 2})
    flag = _flags(_trials({"score": 0.9, "n_dense": 1}), space)["n_dense"]
    assert flag["extendable"] is False and flag["suggested_limit"] is None
    assert "cannot lower it past 1, the hard limit of n_dense for family baseline_cnn" in flag["suggestion"]
    assert boundary_lines([flag]) == []
    assert settled_sentence([flag]) == ("ranges settled: no best value at an extendable range edge "
                                        "(n_dense is at its hard limit 1)")


@settings(max_examples=60, deadline=None)
@given(low=st.floats(1e-3, 10.0), width=st.floats(1e-2, 100.0), log=st.booleans(), side=st.sampled_from(["low",
                                                                                                      "high"]))
def test_an_extended_range_contains_the_old_one_and_moves_only_one_end(low: float, width: float, log: bool,
                                                                       side: str) -> None:
    param = HyperParam("l2", "float", low=low, high=low + width, log=log)
    new = param.extended(side, Limits(0.0, None))
    assert new is not None
    assert new.contains(param.low) and new.contains(param.high) and new.contains(param.default)
    kept = "high" if side == "low" else "low"
    assert getattr(new, kept) == getattr(param, kept)
    assert new.range.edge(getattr(new, side)) == side and param.range.edge(getattr(param, side)) == side
    assert new.low >= 0.0 and (not log or new.low > 0)


# --------------------------------------------------------------------------- messages and populations
def test_messages_name_the_population_of_a_conditional_hyperparameter() -> None:
    space = _space(optimizer={"type": "choice", "values": ["adam", "adamw"]},
                   weight_decay={"type": "float", "low": 1e-5, "high": 1e-2, "log": True})
    trials = _trials({"score": 0.95, "optimizer": "adam", "weight_decay": 1e-5},  # inactive: not counted
                     {"score": 0.9, "optimizer": "adamw", "weight_decay": 1e-2},
                     {"score": 0.8, "optimizer": "adamw", "weight_decay": 9e-3},
                     {"score": 0.7, "optimizer": "adamw", "weight_decay": 1e-2},
                     {"score": 0.6, "optimizer": "adamw", "weight_decay": 1e-4})
    flag = _flags(trials, space)["weight_decay"]
    assert flag["message"].startswith("3 of the 3 best trials where weight_decay is active (optimizer adamw) have "
                                      "weight_decay at the high end of its range float 1e-05..0.01 log (best 0.01)")
    assert flag["message"].endswith("raise the high end from 0.01 to 0.1")
    assert boundary_lines([flag]) == [f"boundary: {flag['message']}."]


def test_messages_count_only_the_trials_at_the_edge_and_name_a_single_trial() -> None:
    space = _space(n_blocks={"type": "int", "low": 2, "high": 5})
    trials = _trials({"score": 0.9, "n_blocks": 5}, {"score": 0.8, "n_blocks": 3}, {"score": 0.7, "n_blocks": 4})
    assert _flags(trials, space)["n_blocks"]["message"].startswith(
        "1 of the 3 best trials has n_blocks at the high end of its range int 2..5 (best 5)")
    one = _flags(trials.head(1), space)["n_blocks"]
    assert one["message"].startswith("the best trial has n_blocks at the high end") and one["counted"] == 1


def test_is_active_follows_the_condition_table() -> None:
    assert not is_active("momentum", {"optimizer": "adam"}) and is_active("momentum", {"optimizer": "sgd"})
    assert is_active("momentum", {}) and is_active("learning_rate", {"optimizer": "adam"})
    assert not is_active("dropout", {"n_dense": 0})


def test_settled_sentence_and_extend_space() -> None:
    space = _space(n_blocks={"type": "int", "low": 2, "high": 5},
                   learning_rate={"type": "float", "low": 1e-3, "high": 1e-2, "log": True})
    assert settled_sentence([]) == SETTLED == "ranges settled: no best value at a range edge"
    flags = boundary_flags(_trials({"score": 0.9, "n_blocks": 5, "learning_rate": 1e-3}), space)
    assert settled_sentence(flags) is None
    new, changes = extend_space(space, flags)
    assert [(old.name, changed.describe()) for old, changed in changes] == [
        ("n_blocks", "int 2..7"), ("learning_rate", "float 0.0001..0.01 log")]
    assert new["n_blocks"].high == 7 and math.isclose(new["learning_rate"].low, 1e-4)
    assert extend_space(space, []) == (space, [])
