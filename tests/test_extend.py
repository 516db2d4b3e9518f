"""``initial_trials`` and ``hpstudy extend``: warm-started follow-ups that follow the boundary.

Most tests search with FAKE scores, as Keras Tuner's own tests do: the hypermodel registers the space,
builds a one-weight model and "fits" it by returning a score computed from the hyperparameters, so a
whole study (freeze, oracle, trials table, boundary flags, follow-up) runs in seconds on the phantom
images without training. One test runs ``extend --run`` with real (tiny) training.
"""

from __future__ import annotations

import fcntl
import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pandas as pd
import pytest
import yaml

from hpstudy.cli import main
from hpstudy.config import load_study, resolve_config
from hpstudy.errors import ConfigError, StudyError
from hpstudy.extend import extend_study
from hpstudy.paths import StudyPaths
from hpstudy.records import update_state, write_frozen
from hpstudy.report.search_sections import chain_sentence
from hpstudy.search.session import freeze_or_check, run_here
from hpstudy.study import run_study, study_status
from hpstudy.warmstart import load_history, merged_history, resolve_initial, warm_start_ids

SPACE = {"family": "baseline_cnn", "hyperparameters": {
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True, "default": 3.0e-3},
    "n_blocks": {"type": "int", "low": 2, "high": 5, "default": 3},
    "dropout": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1, "default": 0.3},
}}
OPTIMUM_BLOCKS = 6  # planted beyond the searched range 2..5 (and within 8, the most blocks 256 px allow)


def planted_score(values: dict[str, Any]) -> float:
    """Best at n_blocks 6 (outside 2..5); dropout 0.3 and learning rate 3e-3, inside their ranges."""
    return (0.95 - 0.01 * (values["n_blocks"] - OPTIMUM_BLOCKS) ** 2 - 2 * (values["dropout"] - 0.3) ** 2
            - 0.5 * (math.log10(values["learning_rate"] / 3e-3)) ** 2)


class PlantedOptimum(kt.HyperModel):
    """Registers the space, builds a one-weight model, and 'fits' it by scoring the hyperparameters."""

    def __init__(self, space: Any) -> None:
        super().__init__()
        self.space = space

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        for param in self.space.params:
            param.register(hp)
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        history = keras.callbacks.History()
        history.history, history.epoch = {"val_auc": [planted_score(hp.values)]}, [0]
        return history


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpstudy.data.phantom import make_phantom

    return make_phantom(tmp_path_factory.mktemp("data") / "phantom", n_train=8, n_val=4, n_test=4, size=32)


@pytest.fixture
def fake_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hpstudy.models.build_hypermodel", lambda family, space, **kwargs: PlantedOptimum(space))


def write_study(folder: Path, data: Path, *, name: str = "s", space: dict | None = None, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space or SPACE, sort_keys=False))
    study = {"name": name, "data": str(data), "family": "baseline_cnn", "search_space": "space.yaml",
             "oracle": {"type": "random", "max_trials": 10, "epochs": 1}, "seed": 5, "image_size": 32,
             "augmentation": False, "leak_check": "off", **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def hand_made_run(study_yaml: Path, rows: list[dict[str, Any]], *, status: str = "finished") -> StudyPaths:
    """A run directory as a search leaves it: frozen study.yaml, trials.csv, study.json, .lock (no tuner)."""
    config = load_study(study_yaml)
    paths = StudyPaths(config.study_dir)
    paths.root.mkdir(parents=True)
    write_frozen(paths, {"config": config.to_dict(), "seed": config.seed, "data_fingerprint": "f" * 40})
    table = pd.DataFrame([{"trial_id": f"{i:02d}", "status": "COMPLETED", "score": row["score"], "best_epoch": 1,
                           "epochs_run": 1, "seconds": 1.0, **{f"hp_{k}": v for k, v in row.items() if k != "score"}}
                          for i, row in enumerate(rows)])
    table.to_csv(paths.trials_csv, index=False)
    update_state(paths, status=status, trials_done=len(rows), planned_trials=10, boundary=[])
    paths.lock.touch()  # every search leaves its lock file behind
    return paths


MIDDLE = {"learning_rate": 3e-3, "n_blocks": 3, "dropout": 0.3, "score": 0.8}


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- initial_trials: bad input
def test_initial_trials_with_an_unknown_name_is_refused_listing_the_valid_ones(tmp_path: Path) -> None:
    study = write_study(tmp_path, tmp_path, initial_trials=[{"lerning_rate": 1e-3}])
    with pytest.raises(ConfigError, match=r"s\.yaml: initial_trials\.0\.lerning_rate: unknown hyperparameter "
                                          r"'lerning_rate' \(did you mean 'learning_rate'\?\).*declares: "
                                          r"learning_rate, n_blocks, dropout$"):
        load_study(study)


def test_an_initial_value_outside_the_space_is_refused_with_file_key_and_value(tmp_path: Path) -> None:
    study = write_study(tmp_path, tmp_path, initial_trials=[{"n_blocks": 4}, {"n_blocks": 9}])
    with pytest.raises(ConfigError, match=r"s\.yaml: initial_trials\.1\.n_blocks: 9 lies outside this study's "
                                          r"space \(n_blocks: int 2\.\.5\)"):
        load_study(study)
    assert main(["status", str(study)]) == 1


def test_initial_values_take_the_spaces_defaults_and_types(tmp_path: Path) -> None:
    study = write_study(tmp_path, tmp_path, initial_trials=[{"n_blocks": 4.0, "dropout": "0.2"}])
    config = load_study(study)
    assert config.initial_trials.configurations == ({"learning_rate": 3e-3, "n_blocks": 4, "dropout": 0.2},)
    assert isinstance(config.initial_trials.configurations[0]["n_blocks"], int)
    assert config.to_dict()["initial_trials"] == [{"n_blocks": 4, "dropout": 0.2}]
    assert "initial_trials" not in load_study(write_study(tmp_path / "b", tmp_path)).to_dict()


def test_a_from_study_of_another_family_is_refused_before_anything_is_frozen(
        tmp_path: Path, phantom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other_space = {"family": "resnet50v2_head", "hyperparameters": {"n_dense": {"type": "int", "low": 0, "high": 2}}}
    (tmp_path / "head.yaml").write_text(yaml.safe_dump(other_space))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"name": "other", "family": "resnet50v2_head",
                                                         "search_space": "head.yaml", "weights": "none",
                                                         "oracle": {"type": "random", "max_trials": 2, "epochs": 1}}))
    study = write_study(tmp_path, phantom, initial_trials={"from": "other.yaml"})
    assert main(["search", str(study)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "initial_trials.from: study 'other'" in err and "is of family 'resnet50v2_head', but this study is " \
                                                           "'baseline_cnn'" in err
    assert not StudyPaths(tmp_path / "s").frozen_config.exists()


def test_a_from_study_without_completed_trials_or_files_is_refused(tmp_path: Path) -> None:
    write_study(tmp_path, tmp_path, name="first")
    study = write_study(tmp_path, tmp_path, initial_trials={"from": "first.yaml", "top_k": 2})
    config = load_study(study)
    with pytest.raises(StudyError, match="study 'first' has no completed trial to start from"):
        resolve_initial(config, StudyPaths(config.study_dir))
    missing = load_study(write_study(tmp_path, tmp_path, name="t", initial_trials={"from": "nope.yaml"}))
    with pytest.raises(ConfigError, match=r"t\.yaml: initial_trials\.from: no study at .*nope\.yaml"):
        resolve_initial(missing, StudyPaths(missing.study_dir))


def test_from_takes_the_top_k_distinct_configurations_inside_this_space(tmp_path: Path) -> None:
    first = write_study(tmp_path, tmp_path, name="first")
    hand_made_run(first, [{**MIDDLE, "score": 0.7}, {**MIDDLE, "n_blocks": 4, "score": 0.9},
                          {**MIDDLE, "n_blocks": 4, "score": 0.85}, {**MIDDLE, "n_blocks": 5, "score": 0.8}])
    config = load_study(write_study(tmp_path, tmp_path, initial_trials={"from": "first", "top_k": 2}))
    entries = resolve_initial(config, StudyPaths(config.study_dir))  # a run directory works as well as a YAML
    assert [(e["trial_id"], e["values"]["n_blocks"]) for e in entries] == [("01", 4), ("03", 5)], \
        "trial 02 repeats 01's configuration"
    narrow = {"family": "baseline_cnn", "hyperparameters": {"n_blocks": {"type": "int", "low": 2, "high": 4}}}
    config = load_study(write_study(tmp_path / "n", tmp_path, space=narrow, initial_trials={"from": "../first.yaml",
                                                                                            "top_k": 3}))
    with pytest.raises(ConfigError, match="trial 01 of study 'first' sets 'learning_rate', which this study's space "
                                          "does not declare; it declares: n_blocks"):
        resolve_initial(config, StudyPaths(config.study_dir))


def test_a_changed_initial_trials_is_refused_on_resume(tmp_path: Path) -> None:
    first = load_study(write_study(tmp_path, tmp_path, initial_trials=[{"n_blocks": 4}]))
    paths = StudyPaths(first.study_dir)
    freeze_or_check(first, paths, "f" * 40)
    freeze_or_check(first, paths, "f" * 40)  # the same one resumes
    changed = load_study(write_study(tmp_path, tmp_path, initial_trials=[{"n_blocks": 5}]))
    with pytest.raises(StudyError, match=r"initial_trials: \[\{'n_blocks': 4\}\] -> \[\{'n_blocks': 5\}\]"):
        freeze_or_check(changed, paths, "f" * 40)


# --------------------------------------------------------------------------- extend: refusals and no flag
def test_extend_refuses_a_study_never_searched_running_or_unfinished(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    study = write_study(tmp_path, tmp_path)
    with pytest.raises(StudyError, match="cannot extend study 's': it has not been searched yet"):
        extend_study(study)
    paths = hand_made_run(study, [MIDDLE], status="running")
    with pytest.raises(StudyError, match=r"its search is unfinished \(status running, 1 of 10 trials done\); "
                                         r"finish it first with `hpstudy search .*s\.yaml` \(it resumes\)"):
        extend_study(study)
    with open(paths.lock, "w") as held:  # another process's search holds the study's lock
        held.write("PID 4242 on elsewhere since 2026-01-01T00:00:00Z (search)\n")
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["extend", str(study)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpstudy extend: error: cannot extend study 's' while its search runs: study s is in use "
                          "by PID 4242 on elsewhere") and "\n" not in err
    assert not list(tmp_path.glob("*-ext*"))


def test_extend_without_a_flag_says_so_exits_0_and_writes_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    study = write_study(tmp_path, tmp_path)
    hand_made_run(study, [MIDDLE, {**MIDDLE, "n_blocks": 4, "score": 0.7}])
    before = _files(tmp_path)
    assert main(["extend", str(study), "--run"]) == 0
    out = capsys.readouterr().out
    assert "ranges settled: no best value at a range edge; nothing to extend" in out
    assert _files(tmp_path) == before


# --------------------------------------------------------------------------- extend with fake scores
def test_extend_reaches_a_planted_optimum_beyond_the_range_in_two_follow_ups(
        tmp_path: Path, phantom: Path, fake_scores: None) -> None:
    study = write_study(tmp_path / "studies", phantom, oracle={"type": "random", "max_trials": 10, "epochs": 1},
                        image_size=256)  # n_blocks may grow to 8 (scores are faked: nothing trains at 256 px)
    run_study(study, overrides=["oracle.max_trials=10"], verbose=False)
    original = pd.read_csv(tmp_path / "studies/s/trials.csv", dtype={"trial_id": str})
    top3 = original.sort_values("score", ascending=False, kind="stable").head(3)

    first = extend_study(study, verbose=False)  # written, searched below in two parts
    assert first.study_yaml == tmp_path / "studies/s-ext1.yaml"
    assert first.space_yaml == tmp_path / "studies/space-ext1.yaml"
    assert "n_blocks: int 2..5 -> int 2..7" in first.changes
    written = yaml.safe_load(first.study_yaml.read_text())
    assert written["initial_trials"] == {"from": "s.yaml", "top_k": 3} and written["oracle"]["max_trials"] == 10
    assert written["search_space"] == "space-ext1.yaml" and written["data"] == str(phantom)

    follow_up = resolve_config(first.study_yaml)
    paused = run_here(follow_up, trial_limit=2, announce=False)  # stopped after 2 trials, as trials_per_process does
    assert paused.paused and paused.trials_total == 2
    run_study(first.study_yaml, verbose=False)  # resumes: the third warm start next, none twice
    ext1 = pd.read_csv(tmp_path / "studies/s-ext1/trials.csv", dtype={"trial_id": str})
    columns = ["hp_learning_rate", "hp_n_blocks", "hp_dropout"]
    configurations = ext1[columns].round(12).apply(tuple, axis=1)
    assert configurations.is_unique and len(ext1) == 10
    replayed = set(configurations.iloc[3:]) & set(original[columns].round(12).apply(tuple, axis=1))
    assert not replayed, "the follow-up's own suggestions replay the original's (same seed)"
    for (_, warm), (_, old) in zip(ext1.head(3).iterrows(), top3.iterrows()):
        assert warm["hp_n_blocks"] == old["hp_n_blocks"] and warm["score"] == pytest.approx(old["score"])

    history, names = load_history(tmp_path / "studies/s-ext1")
    assert names == ["s", "s-ext1"] and list(history["position"]) == list(range(1, 21))
    warm_rows = history[history["warm_start_of"].notna()]
    assert list(warm_rows["trial_id"]) == ["00", "01", "02"] and list(warm_rows["study"]) == ["s-ext1"] * 3
    assert list(warm_rows["warm_start_of"]) == [f"s/{t}" for t in top3["trial_id"]]

    current, follow_ups = first, 1
    while current.study_yaml is not None and follow_ups <= 2:
        last = current.study_yaml
        current = extend_study(last, run=True, verbose=False)
        follow_ups += current.study_yaml is not None
    assert current.study_yaml is None and follow_ups <= 2, "the optimum was not reached in 2 follow-ups"
    status = study_status(last)
    assert any(line.startswith("ranges settled: no best value at") for line in status.splitlines()), status
    final_range = load_study(last).search_space["n_blocks"]
    assert final_range.contains(OPTIMUM_BLOCKS) and not load_study(study).search_space["n_blocks"].contains(
        OPTIMUM_BLOCKS)
    best = pd.read_csv(last.parent / last.stem / "trials.csv").sort_values("score").iloc[-1]
    assert abs(best["hp_n_blocks"] - OPTIMUM_BLOCKS) <= 1
    assert final_range.range.edge(best["hp_n_blocks"]) is None or final_range.high == 8, "settled, or at 256 px's cap"
    assert "extend these ranges in a warm-started follow-up study: hpstudy extend" in study_status(study)

    from hpstudy.report import write_report

    report = write_report([last], out_dir=tmp_path / "report").markdown.read_text()
    assert "History across the follow-up studies" in report and "trials 1–10 are study s's; trials 11–20 are " \
                                                                "study s-ext1's, of which 3 repeat" in report


def test_merged_history_puts_the_oldest_study_first_and_keeps_every_trials_id() -> None:
    first = pd.DataFrame({"trial_id": ["10", "2", "1"], "status": ["COMPLETED"] * 3, "score": [0.7, 0.9, 0.8],
                          "hp_n_blocks": [3, 5, 4]})
    second = pd.DataFrame({"trial_id": ["1", "0"], "status": ["COMPLETED", "FAILED"], "score": [0.95, None],
                           "hp_n_blocks": [6, 5]})
    assert warm_start_ids(second, [{"study": "a", "trial_id": "2", "values": {"n_blocks": 5}},
                                   {"study": None, "trial_id": None, "values": {"n_blocks": 6}}]) == {"0": "a/2"}
    history = merged_history([("a", first, {}), ("b", second, {"0": "a/2"})])
    assert list(history.columns[:4]) == ["position", "study", "trial_id", "warm_start_of"]
    assert list(zip(history["study"], history["trial_id"])) == [("a", "1"), ("a", "2"), ("a", "10"), ("b", "0"),
                                                               ("b", "1")]
    assert list(history["position"]) == [1, 2, 3, 4, 5] and history["warm_start_of"].tolist()[3] == "a/2"
    assert chain_sentence(history) == ("One history, oldest study first: trials 1–3 are study a's; trials 4–5 are "
                                       "study b's, of which 1 repeats an earlier trial (a/2).")


# --------------------------------------------------------------------------- one real extend --run
TINY = {"family": "baseline_cnn", "hyperparameters": {
    "learning_rate": {"type": "float", "low": 3.0e-3, "high": 1.0e-2, "log": True},
    "n_blocks": {"type": "int", "low": 1, "high": 2, "default": 2},
    "base_filters": {"type": "choice", "values": [4], "default": 4},
    "dense_units": {"type": "choice", "values": [8], "default": 8},
    "batch_size": {"type": "choice", "values": [16], "default": 16},
}}


def test_a_real_extend_run_on_a_tiny_phantom_study(tmp_path: Path, phantom: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # One trial each (real training, 32 px, 1 epoch): the first is the space's defaults, n_blocks 2 at the top of
    # 1..2, so the follow-up raises it to 3 and re-runs that trial first.
    study = write_study(tmp_path, phantom, space=TINY, oracle={"type": "random", "max_trials": 1, "epochs": 1})
    assert main(["search", str(study)]) == 0
    best = pd.read_csv(tmp_path / "s/trials.csv", dtype={"trial_id": str}).iloc[0]
    capsys.readouterr()
    assert main(["extend", str(study), "--run", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "n_blocks: int 1..2 -> int 1..3" in out and "[s-ext1] trial 1/1" in out
    follow_up = pd.read_csv(tmp_path / "s-ext1/trials.csv", dtype={"trial_id": str})
    assert list(follow_up["status"]) == ["COMPLETED"] and follow_up.iloc[0]["score"] >= 0
    assert follow_up.iloc[0]["hp_n_blocks"] == best["hp_n_blocks"] == 2
    assert follow_up.iloc[0]["hp_learning_rate"] == pytest.approx(best["hp_learning_rate"])
    assert yaml.safe_load((tmp_path / "s-ext1.yaml").read_text())["seed"] == 5 + 100_003
    assert "warm start: the 1 best trial(s) of study s" in study_status(tmp_path / "s-ext1.yaml")
