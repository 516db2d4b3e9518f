"""The chief: serves the oracle over gRPC, starts and watches local workers, reports every trial."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpstudy import _kt_compat as compat
from hpstudy._io import read_json, utc_now
from hpstudy.config import StudyConfig
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import update_state
from hpstudy.search.distributed._common import (
    HEARTBEAT_SECONDS,
    WORKER_ERROR,
    DistributedSettings,
    available_cpus,
    gpu_ids,
    parse_address,
    require_grpc,
    thread_split,
    worker_environment,
)
from hpstudy.search.session import StudyOutcome, build_tuner, conclude, prepare

log = logging.getLogger("hpstudy")

_POLL_SECONDS = 0.5


# --------------------------------------------------------------------------- oracle access
def _locked(func: Callable[..., Any], oracle: Any, *args: Any) -> Any:
    """Run ``func(oracle, ...)`` holding the oracle's lock (the gRPC threads change it concurrently)."""
    import keras_tuner as kt

    return kt.synchronized(func)(oracle, *args)


def _snapshot(oracle: Any) -> dict[str, Any]:
    return {"ended": list(oracle.end_order),
            "ongoing": {tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()},
            "tuner_ids": set(oracle.tuner_ids), "retry": compat.retry_queue(oracle)}


def _release(oracle: Any, tuner_id: str) -> str | None:
    trial = oracle.ongoing_trials.pop(tuner_id, None)
    oracle.tuner_ids.discard(tuner_id)
    if trial is None:
        return None
    compat.requeue(oracle, trial.trial_id)
    oracle.save()
    return trial.trial_id


def release_worker(oracle: Any, tuner_id: str) -> str | None:
    """Forget a worker that is gone: its running trial (returned) goes back to the oracle's retry queue."""
    return _locked(_release, oracle, tuner_id)


def _hold(oracle: Any, tuner_id: str) -> bool:
    """Keep a worker that would be told to stop while others still run trials (one may die and need it)."""
    if any(other != tuner_id for other in oracle.ongoing_trials):
        oracle.tuner_ids.add(tuner_id)
        return True
    return False


class _Fatal:
    """A 'too many consecutive failed trials' error kept from a worker's EndTrial for the chief to raise."""

    error: Exception | None = None


def _servicer(oracle: Any) -> Any:
    """Keras Tuner's ``OracleServicer`` with two changes for crash safety.

    A worker the oracle would stop waits (IDLE) while other workers still run trials, so that a trial
    released by a dead worker finds a taker; and a 'too many consecutive failed trials' error is kept for
    the chief to raise (``servicer.fatal``) instead of failing the worker's request.
    """
    fatal = _Fatal()

    def on_create(servicer: Any, request: Any, trial: Any) -> Any:
        if trial.status == "STOPPED":
            if _locked(_hold, oracle, request.tuner_id):
                return compat.idle_trial(oracle)
            servicer.stop_triggered = True
        return trial

    def on_end_error(exc: Exception) -> bool:
        if "consecutive" not in str(exc).lower():
            return False
        fatal.error = exc
        return True

    servicer = compat.oracle_servicer(oracle, on_create=on_create, on_end_error=on_end_error)
    servicer.fatal_box = fatal
    return servicer


def _start_server(servicer: Any, listen: str, threads: int) -> tuple[Any, int]:
    from concurrent import futures

    import grpc

    host, port = parse_address(listen, what="--listen")
    # SO_REUSEPORT (gRPC's default on Linux) would let a second chief share the port and split the workers
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=[("grpc.so_reuseport", 0)])
    compat.grpc_services()[1].add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise StudyError(f"cannot serve the oracle on --listen {listen}: the port is taken or the address is not "
                         "one of this machine's; choose another (port 0 picks a free one)")
    server.start()
    return server, bound


# --------------------------------------------------------------------------- the chief
@dataclass
class _Worker:
    """One local worker process slot; restarted with the same tuner id."""

    tuner_id: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    log_offset: int = 0
    finished: bool = False  # exited 0: the oracle told it there is nothing left
    dead: bool = False  # restarts used up
    last_exit: str = ""


@dataclass
class _Chief:
    """Monitors the workers while the gRPC threads serve the oracle (see the module docstring)."""

    tuner: Any
    config: Any
    paths: StudyPaths
    settings: DistributedSettings
    servicer: Any
    address: str
    workers: list[_Worker] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)
    beats: dict[str, tuple[Any, float]] = field(default_factory=dict)
    idle_since: float | None = None
    last_beat_check: float = 0.0

    @property
    def oracle(self) -> Any:
        return self.tuner.oracle

    def run(self) -> None:
        self.reported = set(_locked(_snapshot, self.oracle)["ended"])
        deadline = None if self.settings.timeout is None else time.monotonic() + self.settings.timeout
        for worker in self.workers:
            self._start(worker)
        try:
            while True:
                state = _locked(_snapshot, self.oracle)
                self._report(state)
                if self._finished(state):
                    break
                self._check(state)
                if deadline is not None and time.monotonic() > deadline:
                    raise StudyError(f"study '{self.config.name}': the distributed search did not finish within "
                                     f"--timeout {self.settings.timeout:g} s; run the same command again to resume")
                time.sleep(_POLL_SECONDS)
        finally:
            self._stop_all()
        self._report(_locked(_snapshot, self.oracle))

    def _finished(self, state: dict[str, Any]) -> bool:
        return bool(self.servicer.stop_triggered and not state["ongoing"] and not state["tuner_ids"]
                    and not state["retry"])

    def _check(self, state: dict[str, Any]) -> None:
        if self.servicer.fatal_box.error is not None:
            raise StudyError(f"study '{self.config.name}' stopped: {self.servicer.fatal_box.error}\n"
                             "See the message column "
                             f"of {self.paths.trials_csv} for each failed trial.")
        for worker in self.workers:
            self._check_worker(worker, state)
        self._check_heartbeats(state)
        self._check_stalled(state)

    # ---- trials that ended: progress line, trials table, checkpoints
    def _report(self, state: dict[str, Any]) -> None:
        for trial_id in state["ended"]:
            if trial_id in self.reported:
                continue
            self.reported.add(trial_id)
            self.tuner.trials_run_here += 1
            if self.tuner.on_trial_done is not None:
                self.tuner.on_trial_done(self.tuner, self.oracle.trials[trial_id])
            if not self.config.keep_checkpoints:
                _locked(lambda _oracle: self.tuner.drop_unneeded_checkpoints(), self.oracle)

    # ---- local worker processes
    def _start(self, worker: _Worker) -> None:
        worker.starts += 1
        worker.finished = False
        worker.log.parent.mkdir(parents=True, exist_ok=True)
        with open(worker.log, "ab") as output:
            worker.log_offset = output.tell()
            output.write(f"--- {utc_now()} start {worker.starts} of {worker.tuner_id}\n".encode())
            output.flush()
            worker.process = subprocess.Popen(worker.command, env=worker.env, stdout=output,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _check_worker(self, worker: _Worker, state: dict[str, Any]) -> None:
        if worker.process is None:
            return
        code = worker.process.poll()
        if code is None:
            return
        worker.process = None
        if code == 0:
            worker.finished = True
            return
        worker.last_exit = _exit_reason(code)
        error = _worker_error(worker)
        if error:
            raise StudyError(f"worker {worker.tuner_id} stopped: {error} (log: {worker.log})")
        trial = state["ongoing"].get(worker.tuner_id)
        during = f" during trial {trial}" if trial else ""
        if worker.starts - 1 < self.settings.max_restarts:
            log.info(f"[{self.config.name}] {worker.tuner_id} {worker.last_exit}{during}; restarting it "
                  f"({worker.starts}/{self.settings.max_restarts})" + (" to re-run that trial" if trial else ""))
            self._start(worker)
            return
        worker.dead = True
        released = release_worker(self.oracle, worker.tuner_id)
        log.info(f"[{self.config.name}] {worker.tuner_id} {worker.last_exit}{during}; no restart left (log: "
              f"{worker.log})" + (f"; trial {released} goes back to the queue" if released else ""))

    def _stop_all(self) -> None:
        live = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        for worker in live:
            worker.process.terminate()
        for worker in live:
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(timeout=10)

    # ---- heartbeats: a live process that stopped beating is hung; a silent remote worker is gone
    def _check_heartbeats(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last_beat_check < HEARTBEAT_SECONDS:
            return
        self.last_beat_check = now
        local = {w.tuner_id: w for w in self.workers}
        for tuner_id in set(state["ongoing"]) | state["tuner_ids"]:
            beat = _read_beat(self.paths.worker_heartbeat(tuner_id))
            seen = self.beats.get(tuner_id)
            if seen is None or seen[0] != beat:
                self.beats[tuner_id] = (beat, now)
            elif now - seen[1] > self.settings.heartbeat_timeout:
                del self.beats[tuner_id]
                self._silent(tuner_id, local.get(tuner_id))

    def _silent(self, tuner_id: str, worker: _Worker | None) -> None:
        quiet = f"no heartbeat from {tuner_id} for {self.settings.heartbeat_timeout:g} s"
        if worker is not None and worker.process is not None:
            log.info(f"[{self.config.name}] {quiet}: killing it")
            worker.process.kill()  # the next check restarts it like any dead worker
            return
        released = release_worker(self.oracle, tuner_id)
        log.info(f"[{self.config.name}] {quiet}: counting it as gone"
              + (f"; trial {released} goes back to the queue" if released else ""))

    # ---- nobody left to run the remaining trials
    def _check_stalled(self, state: dict[str, Any]) -> None:
        local_ids = {w.tuner_id for w in self.workers}
        remote = (set(state["ongoing"]) | state["tuner_ids"]) - local_ids
        if any(w.process is not None for w in self.workers) or remote:
            self.idle_since = None
            return
        spare = next((w for w in self.workers if not w.dead and w.starts - 1 < self.settings.max_restarts), None)
        if spare is not None and (state["retry"] or not self.servicer.stop_triggered):
            self._start(spare)  # a released trial waits and this worker had stopped: it takes the trial
            return
        now = time.monotonic()
        self.idle_since = self.idle_since or now
        grace = self.settings.heartbeat_timeout if not self.workers else 0.0
        if now - self.idle_since >= grace:
            raise StudyError(self._stalled_message(state))

    def _stalled_message(self, state: dict[str, Any]) -> str:
        if not self.workers:
            return (f"study '{self.config.name}': no worker joined the chief at {self.address} within "
                    f"{self.settings.heartbeat_timeout:g} s (hpstudy worker STUDY.yaml --chief {self.address}); "
                    "run the same command again to resume")
        exits = "; ".join(f"{w.tuner_id} {w.last_exit}" for w in self.workers if w.last_exit)
        waiting = ", ".join(state["retry"]) or "not started yet"
        tail = _log_tail(self.workers[-1].log)
        return (f"study '{self.config.name}': every worker stopped before the search ended ({exits}); trials left: "
                f"{waiting}. Logs: {self.paths.workers_dir}. Run the same command again to resume."
                + (f"\nLast lines of {self.workers[-1].log.name}:\n{tail}" if tail else ""))


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _worker_error(worker: _Worker) -> str | None:
    """The one-line hpstudy error a worker printed in its last run (a user-fixable problem: no restart)."""
    try:
        with open(worker.log, "rb") as log:
            log.seek(worker.log_offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.startswith(WORKER_ERROR)]
    return lines[-1][len(WORKER_ERROR):].strip() if lines else None


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _read_beat(path: Path) -> Any:
    beat = read_json(path, default=None)
    return beat.get("beat") if isinstance(beat, dict) else None


def _overrides_as_text(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return [overrides] if isinstance(overrides, str) else [str(o) for o in overrides]


def _local_workers(config: Any, paths: StudyPaths, settings: DistributedSettings, chief: str,
                   overrides: Sequence[str] | Mapping[str, Any], fit_verbose: int) -> tuple[list[_Worker], str]:
    if settings.workers and config.source is None:
        raise ConfigError("local workers read the study from its YAML file, but this StudyConfig has none: "
                          "pass the path of the study YAML")
    gpus = gpu_ids() if settings.workers else []
    cpus = available_cpus()
    workers = []
    for index in range(settings.workers):
        tuner_id = f"worker{index}"
        command = [sys.executable, "-m", "hpstudy.cli", "worker", str(config.source), "--chief", chief,
                   "--id", tuner_id, "--verbose", str(fit_verbose)]
        if config.data is not None:
            command += ["--data", str(config.data)]
        for override in _overrides_as_text(overrides):
            command += ["--set", override]
        env = worker_environment(index, workers=settings.workers, gpus=gpus, cpus=cpus, base=os.environ)
        workers.append(_Worker(tuner_id, command, env, paths.worker_log(tuner_id)))
    share = (f"one GPU each ({', '.join(gpus)})" if gpus else
             f"{thread_split(settings.workers, cpus)[0]} CPU thread(s) each")
    return workers, share


def serve_chief(tuner: Any, config: Any, paths: StudyPaths, settings: DistributedSettings, *,
                overrides: Sequence[str] | Mapping[str, Any] = (), fit_verbose: int = 0) -> None:
    """Serve ``tuner``'s oracle to worker processes until the search is over; see the module docstring.

    Args:
        tuner: the study's tuner, created or reloaded by ``run_chief`` (it runs no trial itself).
        config: the resolved ``StudyConfig``.
        paths: the study's paths.
        settings: workers to start, address, restarts, timeouts.
        overrides: the ``--set`` overrides the local workers must apply too.
        fit_verbose: Keras ``fit`` verbosity inside the workers' trials.

    Raises:
        ConfigError: grpcio/protobuf missing, or local workers without a study YAML.
        StudyError: the address cannot be served, a worker hit a user-fixable error, no worker is left,
            too many consecutive failed trials, or ``timeout`` passed.
    """
    require_grpc()
    tuner.oracle.verbose = 0  # hpstudy prints one line per trial; Keras Tuner's display would print another
    tuner.save()  # tuner0.json: without it a restarted chief would not reload the oracle (Keras Tuner #976)
    servicer = _servicer(tuner.oracle)
    server, port = _start_server(servicer, settings.listen, threads=max(4, settings.workers + 2))
    host = parse_address(settings.listen)[0]
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    address = f"{local_host}:{port}"
    try:
        workers, share = _local_workers(config, paths, settings, address, overrides, fit_verbose)
        shown = f"{host}:{port}" if local_host == host else f"{host}:{port} (this machine: {address})"
        log.info(f"[{config.name}] chief: Keras Tuner oracle serving on {shown}; {len(workers)} local worker(s), "
              f"{share}; logs in {paths.workers_dir}")
        if local_host != host or not workers:
            log.info(f"[{config.name}] other machines join with: hpstudy worker {config.source or 'STUDY.yaml'} "
                  f"--chief {socket.gethostname()}:{port}")
        _Chief(tuner, config, paths, settings, servicer, address, workers).run()
    finally:
        server.stop(grace=2).wait(5)
        tuner.save()


def run_chief(config: StudyConfig, settings: DistributedSettings, *,
              overrides: Sequence[str] | Mapping[str, Any] = (), fit_verbose: int = 0) -> StudyOutcome:
    """Prepare the study as a single-process search would, serve its oracle to workers, then conclude.

    Raises:
        As ``serve_chief``, and the errors of ``search.session.prepare``.
    """
    session = prepare(config)
    tuner, planned = build_tuner(session)
    update_state(session.paths, status="running", started=utc_now(), planned_trials=planned)
    serve_chief(tuner, config, session.paths, settings, overrides=overrides, fit_verbose=fit_verbose)
    return conclude(session, tuner, planned)
