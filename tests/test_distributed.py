"""Keras Tuner's chief/worker mode on loopback: settings, the oracle over gRPC, and whole studies.

The end-to-end tests start real processes on 127.0.0.1 (free ports picked at run time) and bound every
wait with a timeout. One (a worker killed with SIGKILL mid-trial) runs by default; the others are slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hpstudy.errors import ConfigError
from hpstudy.paths import StudyPaths
from hpstudy.search.distributed import (
    DistributedSettings,
    parse_address,
    release_worker,
    thread_split,
    worker_environment,
)
from tests.test_study import write_study

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


# --------------------------------------------------------------------------- settings and environment
def test_addresses_are_checked_and_name_the_option() -> None:
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:50051") == ("::1", 50051)
    assert parse_address("node-7.cluster:8000", what="--chief", allow_zero_port=False) == ("node-7.cluster", 8000)
    for bad in ("localhost", "host:", ":80", "host:http", "host:70000"):
        with pytest.raises(ConfigError, match=f"--chief must look like HOST:PORT.*{bad!r}"):
            parse_address(bad, what="--chief")
    with pytest.raises(ConfigError, match="port in 1..65535"):
        parse_address("127.0.0.1:0", what="--chief", allow_zero_port=False)


@pytest.mark.parametrize(("changes", "message"), [
    ({"workers": -1}, "--workers must be a whole number >= 0, but got -1"),
    ({"max_restarts": -2}, "--max-restarts must be a whole number >= 0"),
    ({"heartbeat_timeout": 0}, "--heartbeat-timeout must be > 0"),
    ({"timeout": -5.0}, "--timeout must be > 0 seconds, but got -5.0"),
    ({"listen": "0.0.0.0"}, "--listen must look like HOST:PORT"),
])
def test_bad_distributed_settings(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DistributedSettings(**changes)


def test_threads_are_split_between_workers() -> None:
    assert thread_split(2, 2) == (1, 1)
    assert thread_split(3, 2) == (1, 1)
    assert thread_split(2, 16) == (8, 2)
    assert thread_split(1, 4) == (4, 2)


def test_worker_environment_pins_gpus_in_turn_or_splits_threads() -> None:
    base = {"PATH": "/bin", "KERASTUNER_TUNER_ID": "chief", "CUDA_VISIBLE_DEVICES": "2,5"}
    gpu = [worker_environment(i, workers=3, gpus=["2", "5"], cpus=8, base=base) for i in range(3)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in gpu] == ["2", "5", "2"]
    assert all("KERASTUNER_TUNER_ID" not in env and env["PATH"] == "/bin" for env in gpu)
    cpu = worker_environment(1, workers=2, gpus=[], cpus=8, base={"PATH": "/bin"})
    assert cpu["HPSTUDY_INTRA_OP_THREADS"] == cpu["TF_NUM_INTRAOP_THREADS"] == cpu["OMP_NUM_THREADS"] == "4"
    assert cpu["HPSTUDY_INTER_OP_THREADS"] == "2" and cpu["HPSTUDY_PARENT_PID"] == str(os.getpid())
    assert "CUDA_VISIBLE_DEVICES" not in cpu


# --------------------------------------------------------------------------- the oracle, in process
def _oracle(tmp_path: Path, max_trials: int = 5):
    import keras_tuner as kt

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=max_trials, seed=1)
    oracle._set_project_dir(str(tmp_path), "tuner")
    hp = kt.HyperParameters()
    hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")
    hp.Int("n_blocks", 1, 4)
    hp.Choice("batch_size", [16, 32])
    oracle.update_space(hp)
    return oracle


def test_same_tuner_id_gets_its_trial_back_and_a_released_trial_goes_to_the_next_worker(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path)
    first, second = oracle.create_trial("worker0"), oracle.create_trial("worker1")
    assert oracle.create_trial("worker0").trial_id == first.trial_id  # what a restarted worker relies on
    assert release_worker(oracle, "worker0") == first.trial_id
    assert "worker0" not in oracle.tuner_ids and "worker0" not in oracle.ongoing_trials
    assert oracle.create_trial("worker-remote").trial_id == first.trial_id
    assert release_worker(oracle, "nobody") is None
    assert oracle.ongoing_trials["worker1"].trial_id == second.trial_id


def test_oracle_round_trips_over_grpc_with_the_installed_protobuf(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras Tuner's generated *_pb2 modules (protos/v4) work with the installed protobuf and grpcio."""
    import keras_tuner as kt
    from keras_tuner.src.distribute import oracle_client

    from hpstudy.search.distributed._chief import _servicer, _start_server

    oracle = _oracle(tmp_path, max_trials=1)
    servicer = _servicer(oracle)
    server, port = _start_server(servicer, "127.0.0.1:0", threads=2)
    try:
        monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker9")
        monkeypatch.setattr(oracle_client, "TIMEOUT", 20)
        client = oracle_client.OracleClient(oracle)
        assert set(client.get_space().values) == {"learning_rate", "n_blocks", "batch_size"}
        trial = client.create_trial("worker9")
        assert trial.status == "RUNNING" and 1e-4 <= trial.hyperparameters.values["learning_rate"] <= 1e-1
        assert client.create_trial("worker8").status == "IDLE", "told to stop while worker9 may still fail"
        client.update_trial(trial.trial_id, {"score": 0.75}, step=2)
        trial.status = "COMPLETED"
        client.end_trial(trial)
        assert client.create_trial("worker8").status == "STOPPED"
        assert oracle.trials[trial.trial_id].score == pytest.approx(0.75)
        assert client.create_trial("worker9").status == "STOPPED" and servicer.stop_triggered
        assert [t.trial_id for t in client.get_best_trials(1)] == [trial.trial_id]
    finally:
        server.stop(grace=None)
    assert isinstance(kt.HyperParameters.from_proto(trial.hyperparameters.to_proto()), kt.HyperParameters)


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    from hpstudy.errors import StudyError
    from hpstudy.search.distributed._chief import _servicer, _start_server

    first, port = _start_server(_servicer(_oracle(tmp_path)), "127.0.0.1:0", threads=1)
    try:  # a second chief on the same port must not share it (gRPC's SO_REUSEPORT is turned off)
        taken = f"cannot serve the oracle on --listen 127.0.0.1:{port}: the port is taken"
        with pytest.raises(StudyError, match=taken):
            _start_server(_servicer(_oracle(tmp_path)), f"127.0.0.1:{port}", threads=1)
    finally:
        first.stop(grace=None)


# --------------------------------------------------------------------------- whole studies on loopback
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(run_dir: Path) -> list[dict]:
    states = []
    for path in sorted(StudyPaths(run_dir).workers_dir.glob("*.json")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return states


def _trial_state(run_dir: Path, trial_id: str) -> str | None:
    try:
        return json.loads((run_dir / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())["status"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None


def _kill_a_worker_mid_trial(run_dir: Path, chief: subprocess.Popen, deadline: float,
                             after_completed: int = 1) -> tuple[str, str]:
    """SIGKILL the first worker seen running a trial (its trial.json says RUNNING) once others completed."""
    while time.monotonic() < deadline and chief.poll() is None:
        completed = [s for s in _status(run_dir) for _ in range(s.get("trials_done", 0))]
        for state in _status(run_dir):
            trial = state.get("trial_id")
            if len(completed) >= after_completed and trial and not state.get("stopped") \
                    and _trial_state(run_dir, trial) == "RUNNING":
                os.kill(state["pid"], signal.SIGKILL)
                return state["tuner_id"], trial
        time.sleep(0.05)
    raise AssertionError("never saw a worker running a trial")


def _check_table(run_dir: Path, trials: int) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert len(table) == trials and table["trial_id"].is_unique
    assert set(table["status"]) == {"COMPLETED"} and table["score"].notna().all()
    assert (table["epochs_run"] >= 1).all() and table["best_epoch"].notna().all()
    state = json.loads((run_dir / "study.json").read_text())
    assert state["status"] == "finished" and state["trials_done"] == trials
    assert not list(run_dir.rglob("*.tmp*")), "a temporary file was left behind"
    return table


def test_chief_and_two_workers_finish_a_study_when_one_worker_is_killed_mid_trial(sample_data: Path,
                                                                                   tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "dist", sample_data, {"type": "random", "max_trials": 3,
                                                                        "epochs": 1})
    run_dir = tmp_path / "studies" / "dist"
    command = [sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml), "--workers", "2", "--timeout", "400"]
    chief = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed_id, killed_trial = _kill_a_worker_mid_trial(run_dir, chief, time.monotonic() + 300)
        output, _ = chief.communicate(timeout=420)
    finally:
        if chief.poll() is None:
            chief.kill()
            chief.wait(timeout=30)
    assert chief.returncode == 0, output[-4000:]
    table = _check_table(run_dir, 3)
    assert killed_trial in set(table["trial_id"]), "the killed worker's trial was not re-run"
    assert f"{killed_id} was killed by SIGKILL during trial {killed_trial}; restarting it (1/3) to re-run" in output
    lines = [line for line in output.splitlines() if line.startswith("[dist] trial ")]
    assert [line.split()[2] for line in lines] == ["1/3", "2/3", "3/3"], output[-4000:]
    assert re.search(r"chief: Keras Tuner oracle serving on 127\.0\.0\.1:\d+; 2 local worker\(s\), "
                     r"(\d+ CPU thread\(s\)|one GPU) each", output), output[:2000]
    rerun = f"running trial {killed_trial}"
    assert StudyPaths(run_dir).worker_log(killed_id).read_text().count(rerun) == 2, "not re-run by the same id"


@pytest.mark.slow
def test_hyperband_with_a_worker_joining_by_address_then_single_process_resume(sample_data: Path,
                                                                               tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "hbd", sample_data,
                             {"type": "hyperband", "max_epochs": 3, "factor": 3, "iterations": 1})
    run_dir = tmp_path / "studies" / "hbd"
    port = _free_port()
    chief = subprocess.Popen([sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml), "--workers", "1",
                              "--listen", f"127.0.0.1:{port}", "--timeout", "500"],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    joined = subprocess.Popen([sys.executable, "-m", "hpstudy.cli", "worker", str(study_yaml), "--chief",
                               f"127.0.0.1:{port}", "--id", "remote-a", "--threads", "1", "--connect-timeout", "120"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = chief.communicate(timeout=560)
        worker_output, _ = joined.communicate(timeout=120)
    finally:
        for process in (chief, joined):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    assert chief.returncode == 0, output[-4000:]
    assert joined.returncode == 0, worker_output[-4000:]
    state = json.loads((run_dir / "study.json").read_text())
    table = _check_table(run_dir, state["planned_trials"])
    assert {"hb_bracket", "hb_round", "hb_epochs"} <= set(table.columns)
    assert "remote-a: running trial" in worker_output and "ran " in worker_output
    assert "running trial" in StudyPaths(run_dir).worker_log("worker0").read_text()
    resumed = subprocess.run([sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml)], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "already complete" in resumed.stdout, resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_a_silent_remote_worker_is_released_and_its_trial_runs_elsewhere(sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "remote", sample_data, {"type": "random", "max_trials": 3,
                                                                          "epochs": 1})
    run_dir = tmp_path / "studies" / "remote"
    port = _free_port()
    chief = subprocess.Popen([sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml), "--listen",
                              f"127.0.0.1:{port}", "--heartbeat-timeout", "10", "--timeout", "500"],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen([sys.executable, "-m", "hpstudy.cli", "worker", str(study_yaml), "--chief",
                                 f"127.0.0.1:{port}", "--id", name, "--threads", "1"],
                                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for name in ("remote-a", "remote-b")]
    try:
        killed_id, killed_trial = _kill_a_worker_mid_trial(run_dir, chief, time.monotonic() + 300, after_completed=0)
        output, _ = chief.communicate(timeout=500)
    finally:
        for process in (chief, *workers):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    assert chief.returncode == 0, output[-4000:]
    table = _check_table(run_dir, 3)
    assert killed_trial in set(table["trial_id"])
    assert f"no heartbeat from {killed_id} for 10 s: counting it as gone; trial {killed_trial} goes back" in output


def test_worker_needs_the_chiefs_study_and_an_id_keras_tuner_allows(sample_data: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from hpstudy.cli import main

    study_yaml = write_study(tmp_path / "studies", "lonely", sample_data, {"type": "random", "max_trials": 2,
                                                                          "epochs": 1})
    assert main(["worker", str(study_yaml), "--chief", "127.0.0.1:1", "--id", "w", "--connect-timeout", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("hpstudy worker: error: no study run at ") and "start the chief first" in error
    assert not any(name.startswith("KERASTUNER_") for name in os.environ)
    assert main(["worker", str(study_yaml), "--chief", "127.0.0.1:1", "--id", "my-chief"]) == 1
    assert "--id must be a name" in capsys.readouterr().err
    assert main(["worker", str(study_yaml), "--chief", "localhost"]) == 1
    assert "--chief must look like HOST:PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_a_worker_replaces_its_process_every_n_trials_without_the_chief_counting_a_restart(
        sample_data: Path, tmp_path: Path) -> None:
    study_yaml = write_study(tmp_path / "studies", "recycle", sample_data, {"type": "random", "max_trials": 3,
                                                                           "epochs": 1})
    run_dir = tmp_path / "studies" / "recycle"
    command = [sys.executable, "-m", "hpstudy.cli", "search", str(study_yaml), "--workers", "1",
               "--trials-per-process", "1", "--timeout", "400"]
    chief = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=420)
    assert chief.returncode == 0, chief.stdout[-4000:] + chief.stderr[-4000:]
    table = _check_table(run_dir, 3)
    assert table["pid"].nunique() == 1, "exec keeps the worker's PID (the chief sees one worker)"
    log = StudyPaths(run_dir).worker_log("worker0").read_text()
    assert log.count("a fresh process continues (trials_per_process=1)") == 3, log[-3000:]
    assert log.count("the chief has no trial left") == 1 and log.count(" start ") == 1, "no restart was counted"
    assert "restarting it" not in chief.stdout
