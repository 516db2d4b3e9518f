"""Run a study's trials in fresh child processes, N trials each (``trials_per_process: N``).

Keras 3 on TensorFlow keeps ~12 MiB of every trained model's traced step graphs that neither
``keras.backend.clear_session()`` nor ``gc.collect()`` frees (keras-team/keras#17458, #20552): a process that
runs hundreds of trials grows by gigabytes. Only the end of the process returns that memory. So the
parent (which never imports TensorFlow) starts a child that resumes the study, runs N trials and stops
before asking the oracle for the next one; the next child resumes from the study directory, the same way a
study resumes after a crash. Trials, their order and their seeds are those of a single-process run.

The children's log lines reach the parent's standard output as they come (at the parent's log level),
the parent logs the closing summary once; an hpstudy error in a child is raised again in the parent with
its type and message.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hpstudy import _log, errors
from hpstudy._io import atomic_write_json, read_json
from hpstudy.config import StudyConfig
from hpstudy.errors import HpstudyError, StudyError
from hpstudy.runtime import process_start_time
from hpstudy.search.session import StudyOutcome, run_here, summary_text

__all__ = ["run_in_processes", "child_environment"]

log = logging.getLogger("hpstudy")


def run_in_processes(config: StudyConfig, *, fit_verbose: int = 0) -> StudyOutcome:
    """Run the search of ``config`` in child processes of ``config.trials_per_process`` trials each.

    Returns the ``StudyOutcome`` of the whole run (trials counted over every child).

    Raises:
        The hpstudy error a child raised (ConfigError, DataError, StudyError), or StudyError when a
        child died without one (killed, out of memory, a crash): its finished trials are on disk and
        the same command resumes the study.
    """
    per_process = config.trials_per_process
    started = time.time()
    total_run, parts = 0, 0
    with tempfile.TemporaryDirectory(prefix="hpstudy-processes-") as tmp:
        request = Path(tmp) / "config.pickle"
        request.write_bytes(pickle.dumps(config))
        while True:
            parts += 1
            outcome = _run_child(config, request, Path(tmp) / f"result-{parts}.json", fit_verbose, started, parts)
            if parts == 1:
                finished_before = outcome.finished_before  # "already complete" only if no child ran a trial
            total_run += outcome.trials_run
            if not outcome.paused:
                break
            log.info("[%s] %d trial(s) run in %d process(es); a fresh process continues (trials_per_process=%d)",
                     config.name, total_run, parts, per_process)
    outcome = replace(outcome, trials_run=total_run, finished_before=finished_before and total_run == 0)
    log.info(summary_text(outcome, config))
    return outcome


def _run_child(config: StudyConfig, request: Path, result: Path, fit_verbose: int, started: float,
               part: int) -> StudyOutcome:
    command = [sys.executable, "-m", "hpstudy.search.processes", str(request), str(result), str(fit_verbose),
               repr(started)]
    process = subprocess.run(command, env=child_environment(), stdin=subprocess.DEVNULL, check=False)
    payload = _read(result)
    if payload is not None and "error" in payload:
        raise _rebuild_error(payload["error"])
    if payload is None or process.returncode != 0:
        raise StudyError(
            f"study '{config.name}': the trial process {part} {_how_it_ended(process.returncode)} (its output is "
            f"above); the trials it finished are saved in {config.study_dir}: run the same command again to resume")
    fields = payload["outcome"]
    return StudyOutcome(**{**fields, "study_dir": Path(fields["study_dir"])})


def child_environment() -> dict[str, str]:
    """This environment, with hpstudy importable from where this process imported it (a checkout too), and
    this process's log level."""
    env = dict(os.environ)
    env[_log.LEVEL_VARIABLE] = _log.level_for_children()
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (SIGKILL often means the machine ran out of memory)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code} without a result"


def _read(path: Path) -> dict[str, Any] | None:
    payload = read_json(path, default=None)
    return payload if isinstance(payload, dict) else None


def _rebuild_error(error: dict[str, str]) -> HpstudyError:
    kind = getattr(errors, error.get("type", ""), None)
    if not (isinstance(kind, type) and issubclass(kind, HpstudyError)):
        kind = StudyError
    return kind(error.get("message", "a trial process failed"))


def _child(argv: list[str]) -> int:
    request, result, fit_verbose, started = argv
    config = pickle.loads(Path(request).read_bytes())
    try:
        outcome = run_here(config, fit_verbose=int(fit_verbose), trial_limit=config.trials_per_process, announce=False,
                           started=float(started), process_started=process_start_time())
    except HpstudyError as exc:
        atomic_write_json(result, {"error": {"type": type(exc).__name__, "message": str(exc)}})
        return 1
    except KeyboardInterrupt:  # Ctrl-C reaches the parent too, which says how to resume
        return 130
    atomic_write_json(result, {"outcome": asdict(outcome)})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(_child(sys.argv[1:]))
