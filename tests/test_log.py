"""The library logs to the "hpstudy" logger; its default handler prints; a level or verbose=False silences it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpstudy import _log
from hpstudy.study import run_study
from tests.test_study import write_study


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("hpstudy")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


def test_the_default_handler_prints_to_the_current_stdout(logger: logging.Logger,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _log.install_default_handler()
    _log.install_default_handler()  # once only
    logger.info("one line")
    assert capsys.readouterr().out == "one line\n"


def test_quieted_shows_warnings_only_and_restores_the_level(logger: logging.Logger,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    logger.setLevel(logging.INFO)
    with _log.quieted(True):
        logger.info("hidden")
        logger.warning("shown")
    logger.info("back")
    assert capsys.readouterr().out == "shown\nback\n"
    assert logger.level == logging.INFO


def test_disable_default_handler_hands_records_to_the_application(logger: logging.Logger,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    _log.disable_default_handler()
    with caplog.at_level(logging.INFO, logger="hpstudy"):
        logger.info("to the root handlers")
    assert capsys.readouterr().out == ""
    assert "to the root handlers" in caplog.text


def test_children_inherit_the_level(logger: logging.Logger) -> None:
    logger.setLevel("ERROR")
    assert _log.level_for_children() == "ERROR"


def test_a_study_logs_a_line_per_trial_and_verbose_false_silences_it(sample_data: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    logger: logging.Logger) -> None:
    oracle = {"type": "random", "max_trials": 1, "epochs": 1}
    run_study(write_study(tmp_path / "a", "loud", sample_data, oracle))
    loud = capsys.readouterr().out
    assert "[loud] trial 1/1" in loud and "Study 'loud': ran 1 trial(s) now" in loud
    run_study(write_study(tmp_path / "b", "quiet", sample_data, oracle), verbose=False)
    assert "[quiet]" not in capsys.readouterr().out
    assert logger.level == logging.NOTSET or logger.level == logging.INFO  # restored after the call


def test_the_logging_level_silences_a_study_in_a_fresh_interpreter(sample_data: Path, tmp_path: Path) -> None:
    study = write_study(tmp_path, "silent", sample_data, {"type": "random", "max_trials": 1, "epochs": 1},
                        trials_per_process=1)  # a child process too: it inherits the level
    code = ("import hpstudy, logging; logging.getLogger('hpstudy').setLevel('ERROR'); "
            f"hpstudy.run_study({str(study)!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    assert (tmp_path / "silent" / "trials.csv").is_file()

