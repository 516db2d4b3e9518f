"""The tuner mixin's checkpoint policy: the best 3 completed trials keep their weights (finalize restores the best)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hpstudy.paths import CHECKPOINT_FILE, StudyPaths
from hpstudy.search.tuners import KEEP_BEST_CHECKPOINTS, HyperbandTuner, best_completed_trials


def _trial(trial_id: str, score: float | None, status: str = "COMPLETED") -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, score=score, status=status)


TRIALS = [_trial("00", 0.7), _trial("01", 0.9), _trial("02", None, "FAILED"), _trial("03", 0.8),
          _trial("04", 0.95, "RUNNING"), _trial("05", 0.6), _trial("06", 0.85), _trial("07", float("nan"))]


def test_best_completed_trials_by_direction() -> None:
    assert KEEP_BEST_CHECKPOINTS == 3
    assert best_completed_trials(TRIALS, "max") == ["01", "06", "03"]
    assert best_completed_trials(TRIALS, "min") == ["05", "00", "03"]
    assert best_completed_trials(TRIALS[:3], "max", n=5) == ["01", "00"]


@pytest.mark.parametrize("direction", ["max", "min"])
def test_only_the_best_three_finished_trials_keep_their_checkpoint(tmp_path: Path, direction: str) -> None:
    paths = StudyPaths(tmp_path)
    for trial in TRIALS:
        paths.trial_dir(trial.trial_id).mkdir(parents=True)
        paths.trial_checkpoint(trial.trial_id).write_bytes(b"weights")
    oracle = SimpleNamespace(trials={t.trial_id: t for t in TRIALS}, objective=SimpleNamespace(direction=direction),
                             ongoing_trials={"tuner0": TRIALS[4]})
    tuner = SimpleNamespace(oracle=oracle, get_trial_dir=lambda trial_id: str(paths.trial_dir(trial_id)))
    HyperbandTuner.drop_unneeded_checkpoints(tuner)  # a random-search oracle: no open Hyperband brackets
    kept = sorted(p.parent.name[len("trial_"):] for p in tmp_path.glob(f"tuner/trial_*/{CHECKPOINT_FILE}"))
    best = best_completed_trials(TRIALS, direction)
    assert kept == sorted([*best, "04"]), "the best 3 and the running trial keep theirs, the rest are dropped"
