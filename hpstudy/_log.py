"""hpstudy's logger: the library logs, and a default handler prints its lines to standard output.

Every module logs to ``logging.getLogger("hpstudy")``: one line per trial, notes, warnings, summaries.
As in Optuna, importing hpstudy gives that logger one handler that writes the bare message to the
current ``sys.stdout`` (so a notebook, the CLI and pytest's capture all see it) and stops propagation
to the root logger (so a configured root handler does not print every line twice).

* ``logging.getLogger("hpstudy").setLevel("WARNING")`` (or ``"ERROR"``) silences the progress lines;
  ``run_study(..., verbose=False)`` does so for one call.
* ``disable_default_handler()`` removes the handler and turns propagation on, for applications that
  configure logging themselves.
* A child process started by hpstudy inherits the level through ``HPSTUDY_LOG_LEVEL``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

__all__ = ["LOGGER_NAME", "LEVEL_VARIABLE", "install_default_handler", "disable_default_handler", "quieted",
           "level_for_children"]

LOGGER_NAME = "hpstudy"
LEVEL_VARIABLE = "HPSTUDY_LOG_LEVEL"


class _CurrentStdout(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is at the time of the record."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - the StreamHandler attribute
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns it
        pass


def install_default_handler() -> logging.Logger:
    """Give the hpstudy logger its stdout handler (once) and the level from ``HPSTUDY_LOG_LEVEL`` or INFO."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        logger.addHandler(_CurrentStdout())
        logger.propagate = False
    if logger.level == logging.NOTSET:
        wanted = os.environ.get(LEVEL_VARIABLE, "INFO").upper()
        logger.setLevel(wanted if wanted in logging.getLevelNamesMapping() else "INFO")
    return logger


def disable_default_handler() -> None:
    """Remove hpstudy's stdout handler and let records propagate to the application's logging set-up."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _CurrentStdout)]:
        logger.removeHandler(handler)
    logger.propagate = True


@contextlib.contextmanager
def quieted(quiet: bool) -> Iterator[None]:
    """While the block runs, show only warnings and errors when ``quiet`` (the level is restored after)."""
    logger = logging.getLogger(LOGGER_NAME)
    previous = logger.level
    if quiet and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def level_for_children() -> str:
    """The level name a child process should log at (this process's effective level)."""
    return logging.getLevelName(logging.getLogger(LOGGER_NAME).getEffectiveLevel())
