"""Exception hierarchy: every user-facing error is an ``HpstudyError``.

The CLI prints the message of an ``HpstudyError`` on one line and exits 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["HpstudyError", "DataError", "LeakError", "ConfigError", "StudyError", "EvaluationError"]


class HpstudyError(Exception):
    """Base class of the errors a user can fix (bad data, bad YAML, bad command)."""


class DataError(HpstudyError):
    """The data folder or archive is not usable as given."""


class LeakError(DataError):
    """Images appear in more than one split and the leak check severity is ``error``."""


class ConfigError(HpstudyError):
    """A YAML search space or study definition is invalid."""


class StudyError(HpstudyError):
    """A study cannot be created, resumed or finalized in its current state."""


class EvaluationError(StudyError):
    """A guarded test-set evaluation was refused (e.g. the model was already evaluated)."""
