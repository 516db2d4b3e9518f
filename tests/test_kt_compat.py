"""Every assumption hpstudy makes about Keras Tuner's private members, checked against the installed version.

Oracles are driven with fake scores, as Keras Tuner's own tests do: no model is trained.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pytest

from hpstudy import _kt_compat as compat


def _build(hp: kt.HyperParameters) -> keras.Model:
    hp.Float("x", 0.0, 1.0)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


def _tuner(tmp_path: Path, kind: type = kt.RandomSearch, **kwargs: Any) -> kt.Tuner:
    return kind(_build, objective=kt.Objective("score", "max"), directory=str(tmp_path), project_name="p",
                seed=1, **kwargs)


def _run(oracle: Any, score: float = 0.5, tuner_id: str = "tuner0") -> Any:
    trial = oracle.create_trial(tuner_id)
    if trial.status == "STOPPED":
        return trial
    oracle.update_trial(trial.trial_id, {"score": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return trial


def test_the_installed_version_is_in_the_tested_range() -> None:
    assert compat.check_version()


def test_a_version_outside_the_range_warns_once(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_warned", False)
    assert not compat.check_version("1.5.0")
    assert not compat.check_version("2.0.1")
    out = capsys.readouterr().out
    assert out.count("hpstudy was tested with keras-tuner >= 1.4.7, < 1.5.0, but 1.5.0 is installed") == 1


def test_state_files_are_written_through_the_swappable_save_json(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from keras_tuner.src import utils as kt_utils

    written: list[str] = []
    real = kt_utils.save_json
    monkeypatch.setattr(kt_utils, "save_json", lambda path, obj: written.append(Path(path).name) or real(path, obj))
    tuner = _tuner(tmp_path, max_trials=2)
    _run(tuner.oracle)
    assert "oracle.json" in written and "trial.json" in written


def test_the_atomic_writer_replaces_save_json_and_writes_valid_json(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from keras_tuner.src import utils as kt_utils

    monkeypatch.setattr(kt_utils, "save_json", kt_utils.save_json)  # restored after the test
    compat.make_state_writes_atomic()
    assert getattr(kt_utils.save_json, "_hpstudy_atomic", False)
    tuner = _tuner(tmp_path, max_trials=2)
    _run(tuner.oracle)
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    assert state["end_order"] == ["0"]
    assert not list((tmp_path / "p").rglob("*.hpstmp*"))


def test_the_private_tuner_hooks_exist_with_the_signatures_overridden() -> None:
    assert list(inspect.signature(kt.Tuner._build_hypermodel).parameters) == ["self", "hp"]
    assert list(inspect.signature(kt.Tuner._configure_tensorboard_dir).parameters) == [
        "self", "callbacks", "trial", "execution"]


def test_tuner_hooks_skip_tensorboard_without_its_callback(tmp_path: Path) -> None:
    class Hooked(compat.TunerHooks, kt.RandomSearch):
        pass

    tuner = Hooked(_build, objective=kt.Objective("score", "max"), directory=str(tmp_path), project_name="p",
                   max_trials=1)
    callbacks: list[Any] = []
    tuner._configure_tensorboard_dir(callbacks, kt.engine.trial.Trial(kt.HyperParameters(), trial_id="0"))
    assert callbacks == []
    assert isinstance(tuner._build_hypermodel(kt.HyperParameters()), keras.Model)


def test_is_worker_follows_keras_tuners_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tuner = _tuner(tmp_path, max_trials=1)
    assert not compat.is_worker(tuner)
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    assert compat.is_worker(tuner)


def test_requeued_trials_are_handed_out_again_first(tmp_path: Path) -> None:
    oracle = _tuner(tmp_path, max_trials=5).oracle
    first = oracle.create_trial("a")
    compat.requeue(oracle, first.trial_id)
    oracle.ongoing_trials.pop("a")
    assert compat.retry_queue(oracle) == [first.trial_id]
    assert oracle.create_trial("b").trial_id == first.trial_id
    assert compat.retry_queue(oracle) == []


def test_reconcile_records_a_trial_that_ended_but_was_still_queued(tmp_path: Path) -> None:
    oracle = _tuner(tmp_path, max_trials=5).oracle
    trial = _run(oracle, 0.7)
    oracle.end_order.remove(trial.trial_id)  # as if killed between trial.json and oracle.json
    compat.requeue(oracle, trial.trial_id)
    runs = oracle.get_state()["run_times"][trial.trial_id]
    assert compat.reconcile_reloaded(oracle) == [trial.trial_id]
    assert oracle.end_order == [trial.trial_id] and compat.retry_queue(oracle) == []
    assert oracle.get_state()["run_times"][trial.trial_id] == runs + 1


@pytest.mark.parametrize(("max_epochs", "factor"), [(9, 3), (8, 3), (30, 3), (10, 2)])
def test_hyperband_rounds_match_what_the_oracle_creates(tmp_path: Path, max_epochs: int, factor: int) -> None:
    oracle = _tuner(tmp_path, kt.Hyperband, max_epochs=max_epochs, factor=factor, hyperband_iterations=1).oracle
    planned = list(compat.hyperband_rounds(oracle))
    trials, epochs, needed_seen = 0, 0, False
    for score in range(10_000):
        trial = _run(oracle, score / 10_000)
        if trial.status == "STOPPED":
            break
        values = trial.hyperparameters.values
        trials += 1
        epochs += values["tuner/epochs"] - values["tuner/initial_epoch"]
        open_ids = compat.open_bracket_trials(oracle)
        assert open_ids <= set(oracle.trials)
        needed_seen = needed_seen or bool(open_ids)
    assert trials == sum(size for size, _ in planned)
    assert epochs == sum(size * each for size, each in planned)
    assert needed_seen and compat.open_bracket_trials(oracle) == set()


def test_grpc_pieces_of_the_chief_worker_mode() -> None:
    pytest.importorskip("grpc")
    compat.require_grpc()
    messages, service = compat.grpc_services()
    assert hasattr(messages, "CreateTrialResponse") and hasattr(messages, "EndTrialResponse")
    assert hasattr(service, "add_OracleServicer_to_server")


def test_the_servicer_hooks_answer_create_and_end_trial(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    oracle = _tuner(tmp_path, max_trials=1).oracle
    kept: list[Exception] = []
    servicer = compat.oracle_servicer(oracle, on_create=lambda s, request, trial: compat.idle_trial(oracle),
                                      on_end_error=lambda exc: kept.append(exc) or True)
    assert servicer.stop_triggered is False
    messages, _ = compat.grpc_services()
    answer = servicer.CreateTrial(messages.CreateTrialRequest(tuner_id="w"), None)
    assert kt.engine.trial.Trial.from_proto(answer.trial).status == kt.engine.trial.TrialStatus.IDLE


def test_client_timeout_is_keras_tuners_module_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras_tuner.src.distribute import oracle_client

    monkeypatch.setattr(oracle_client, "TIMEOUT", oracle_client.TIMEOUT)
    compat.set_client_timeout(12.5)
    assert oracle_client.TIMEOUT == 12.5


# --------------------------------------------------------------------------- configurations tried first
FIRST = [{"x": 0.25, "n": 7}, {"x": 0.75, "n": 2}, {"x": 0.5, "n": 5}]


def _build_xn(hp: kt.HyperParameters) -> keras.Model:
    hp.Float("x", 0.0, 1.0)
    hp.Int("n", 1, 9)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


def _xn_tuner(tmp_path: Path, kind: type, **kwargs: Any) -> kt.Tuner:
    return kind(_build_xn, objective=kt.Objective("score", "max"), directory=str(tmp_path), project_name="p",
                seed=1, **kwargs)


def _config(trial: Any) -> dict[str, Any]:
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


@pytest.mark.parametrize(("kind", "kwargs"), [(kt.RandomSearch, {"max_trials": 6}),
                                              (kt.BayesianOptimization, {"max_trials": 6, "num_initial_points": 1}),
                                              (kt.Hyperband, {"max_epochs": 9, "factor": 3})])
def test_given_configurations_come_first_in_order_then_the_oracles_own(tmp_path: Path, kind: type,
                                                                       kwargs: dict[str, Any]) -> None:
    # Random/Bayesian: through populate_space; Hyperband: its first-round sampler _random_values.
    oracle = _xn_tuner(tmp_path, kind, **kwargs).oracle
    compat.try_first(oracle, FIRST)
    trials = [_run(oracle, score / 10) for score in range(5)]
    assert [_config(t) for t in trials[:3]] == FIRST
    assert all(_config(t) not in FIRST for t in trials[3:])
    assert compat.first_values(oracle) == []
    if kind is kt.Hyperband:  # the given ones entered the first bracket's first round like any sampled trial
        assert {(t.hyperparameters.values["tuner/round"], t.hyperparameters.values["tuner/initial_epoch"])
                for t in trials[:3]} == {(0, 0)}


def test_hyperband_samples_its_first_round_trials_through_random_values() -> None:
    source = inspect.getsource(kt.oracles.HyperbandOracle._random_trial)
    assert "self._random_values()" in source
    assert list(inspect.signature(kt.Oracle._random_values).parameters) == ["self"]


def test_a_reloaded_oracle_neither_repeats_nor_skips_a_given_configuration(tmp_path: Path) -> None:
    oracle = _xn_tuner(tmp_path, kt.RandomSearch, max_trials=6).oracle
    compat.try_first(oracle, FIRST)
    _run(oracle, 0.1)
    oracle.create_trial("tuner0")  # the second one starts, then the process is killed
    (tmp_path / "p" / "tuner0.json").write_text("{}")  # Keras Tuner reloads a project that has this file
    reloaded = _xn_tuner(tmp_path, kt.RandomSearch, max_trials=6).oracle  # overwrite=False: reload
    compat.try_first(reloaded, FIRST)
    assert compat.first_values(reloaded) == FIRST[2:], "the running one is Keras Tuner's retry, not due again"
    again = [_run(reloaded, 0.2), _run(reloaded, 0.3), _run(reloaded, 0.4)]
    assert [_config(t) for t in again[:2]] == FIRST[1:]  # the interrupted trial first (retry), then the third
    assert again[0].trial_id == "1" and _config(again[2]) not in FIRST


def test_the_swapped_oracle_class_keeps_its_state_and_saves_as_before(tmp_path: Path) -> None:
    oracle = _xn_tuner(tmp_path, kt.Hyperband, max_epochs=3, factor=3).oracle
    before = type(oracle)
    compat.try_first(oracle, FIRST[:1])
    assert isinstance(oracle, before) and type(oracle) is not before
    compat.try_first(oracle, FIRST[1:2])  # a second call replaces the list, the class stays
    assert compat.first_values(oracle) == FIRST[1:2]
    _run(oracle, 0.5)
    oracle.save()
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    assert state["brackets"] and "first_values" not in json.dumps(state)
