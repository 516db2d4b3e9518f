"""A worker: joins a chief, runs the trials it hands out, and beats a heartbeat file for it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpstudy import _kt_compat as compat
from hpstudy._io import atomic_write_json, utc_now
from hpstudy.config import resolve_config
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.search.distributed._common import HEARTBEAT_SECONDS, configure_threads, parse_address, require_grpc
from hpstudy.search.session import build_tuner, prepare, run_search

log = logging.getLogger("hpstudy")

_IDLE_WAIT_SECONDS = 1.0  # a Hyperband worker waiting for a bracket asks again after this pause


class _Heartbeat:
    """Rewrites ``workers/<id>.json`` every few seconds, and when a trial starts or ends."""

    def __init__(self, path: Path, tuner_id: str) -> None:
        self.path = path
        self.state: dict[str, Any] = {"tuner_id": tuner_id, "host": socket.gethostname(), "pid": os.getpid(),
                                      "beat": 0, "trial_id": None, "trials_done": 0}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpstudy-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.update()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * HEARTBEAT_SECONDS)
        self.update(trial_id=None, stopped=utc_now())

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.update()

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.state.update(changes, beat=self.state["beat"] + 1, updated=utc_now())
            try:
                atomic_write_json(self.path, self.state)
            except OSError:  # best effort: a chief that sees no beat falls back on its timeout
                pass


def _watch_parent() -> None:
    """A worker started by a local chief exits as soon as that chief is gone (no orphan keeps training)."""
    parent = os.environ.get("HPSTUDY_PARENT_PID")
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="hpstudy-parent-watch", daemon=True).start()


def _check_tuner_id(tuner_id: str) -> str:
    if not tuner_id or "chief" in tuner_id or any(c in tuner_id for c in "/\\ \t\n") or tuner_id.startswith("."):
        raise ConfigError(f"--id must be a name without spaces or slashes that does not contain 'chief' "
                          f"(Keras Tuner reserves it), but got {tuner_id!r}")
    return tuner_id


def _attach(tuner: Any, heartbeat: _Heartbeat, name: str) -> None:
    """Heartbeat updates and a short line at each trial's start and end; patient Hyperband waits."""
    begin, create = tuner.on_trial_begin, tuner.oracle.create_trial

    def on_trial_begin(trial: Any) -> None:
        heartbeat.update(trial_id=trial.trial_id)
        log.info(f"[{name}] {heartbeat.state['tuner_id']}: running trial {trial.trial_id}")
        begin(trial)

    def on_trial_done(_tuner: Any, trial: Any) -> None:
        heartbeat.update(trial_id=None, trials_done=heartbeat.state["trials_done"] + 1)
        log.info(f"[{name}] {heartbeat.state['tuner_id']}: trial {trial.trial_id} {trial.status}")

    def create_trial(tuner_id: str) -> Any:
        trial = create(tuner_id)
        if trial.status == "IDLE":  # Keras Tuner would ask again at once, in a tight loop
            time.sleep(_IDLE_WAIT_SECONDS)
        return trial

    tuner.on_trial_begin, tuner.on_trial_done, tuner.oracle.create_trial = on_trial_begin, on_trial_done, create_trial


def run_worker(study: str | Path, *, chief: str, tuner_id: str | None = None, data: str | Path | None = None,
               overrides: Sequence[str] | Mapping[str, Any] = (), fit_verbose: int = 0, threads: int | None = None,
               connect_timeout: float = 600.0) -> WorkerOutcome:
    """Join the chief at ``chief`` and run trials until its oracle has none left.

    With ``trials_per_process: N`` it returns after N trials with ``paused`` set: the ``hpstudy worker``
    command then replaces its process with a fresh one (same id, same PID) that joins again, which returns
    the memory TensorFlow keeps per trained model (see ``hpstudy.processes``).

    Args:
        study: the study YAML (the same study as the chief's; its run directory must be shared).
        chief: ``HOST:PORT`` of the chief's oracle.
        tuner_id: this worker's id (default ``worker-<hostname>``); restarting a worker with the same id
            makes it re-run the trial it was running.
        data, overrides: as for ``hpstudy search``; the result must match the chief's frozen configuration.
        fit_verbose: Keras ``fit`` verbosity.
        threads: TensorFlow intra-op threads (default: ``HPSTUDY_INTRA_OP_THREADS`` or all cores).
        connect_timeout: seconds one request may wait for the chief before the worker gives up.

    Raises:
        ConfigError, DataError: bad arguments, configuration or data.
        StudyError: no such study run yet, a changed configuration, or the chief stopped answering.
    """
    host, port = parse_address(chief, what="--chief", allow_zero_port=False)
    tuner_id = _check_tuner_id(tuner_id or f"worker-{socket.gethostname()}")
    if not connect_timeout > 0:
        raise ConfigError(f"--connect-timeout must be > 0 seconds, but got {connect_timeout!r}")
    from hpstudy.runtime import quiet_tensorflow

    quiet_tensorflow()
    require_grpc()
    _watch_parent()
    configure_threads(threads)
    config = resolve_config(study, data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    _wait_for_study(paths, study, connect_timeout)
    with _kerastuner_env(tuner_id, host, port), \
            _Heartbeat(paths.worker_heartbeat(tuner_id), tuner_id) as heartbeat:
        tuner = _join(config, heartbeat, host, port, connect_timeout, fit_verbose)
    if tuner.paused:
        log.info(f"[{config.name}] {tuner_id}: ran {tuner.trials_run_here} trial(s) in this process; a fresh process "
              f"continues (trials_per_process={config.trials_per_process})")
    else:
        log.info(f"[{config.name}] {tuner_id}: the chief has no trial left; ran {tuner.trials_run_here} trial(s) here")
    return WorkerOutcome(tuner.trials_run_here, bool(tuner.paused))


@dataclass(frozen=True)
class WorkerOutcome:
    """What one ``run_worker`` call did: trials run, and whether it stopped at ``trials_per_process``."""

    trials_run: int
    paused: bool = False


def _wait_for_study(paths: StudyPaths, study: str | Path, timeout: float) -> None:
    """Wait (at most ``timeout`` s) for the chief to create the study: workers may be started first."""
    deadline = time.monotonic() + timeout
    if not paths.frozen_config.is_file():
        log.info(f"waiting up to {timeout:g} s for the chief to create the study at {paths.root}")
    while not paths.frozen_config.is_file():
        if time.monotonic() > deadline:
            raise StudyError(f"no study run at {paths.root} after {timeout:g} s: start the chief first (hpstudy "
                             f"search {study} --workers N or --listen HOST:PORT); a worker on another machine "
                             "needs the study directory shared with the chief (e.g. NFS)")
        time.sleep(0.5)


@contextlib.contextmanager
def _kerastuner_env(tuner_id: str, host: str, port: int) -> Iterator[None]:
    """Keras Tuner's worker variables, set while this worker runs and restored after (in-process callers)."""
    names = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port)}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _join(config: Any, heartbeat: _Heartbeat, host: str, port: int, connect_timeout: float,
          fit_verbose: int) -> Any:
    import grpc

    joined = time.time()  # the first trial's wall time counts from here (not from waiting for the chief)
    session = prepare(config, chief=False)
    compat.set_client_timeout(connect_timeout)
    tuner, _ = build_tuner(session, trial_limit=config.trials_per_process or None, process_started=joined)
    _attach(tuner, heartbeat, config.name)
    try:
        run_search(session, tuner, fit_verbose=fit_verbose)
    except grpc.RpcError as exc:
        raise StudyError(f"worker {heartbeat.state['tuner_id']} lost the chief at {host}:{port} "
                         f"({exc.code().name}: {exc.details()}); its trial is re-run when the chief resumes "
                         "the study") from None
    return tuner
