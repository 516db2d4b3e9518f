"""``initial_trials:`` of a study: configurations the oracle tries first, before its own suggestions.

Two forms::

    initial_trials:                      # hyperparameter values; a missing one takes the space's default
      - {learning_rate: 3.0e-3, n_blocks: 4}
      - {learning_rate: 1.0e-3}
    initial_trials: {from: covid_cnn_hyperband.yaml, top_k: 3}   # that study's 3 best completed trials

Given values must lie in this study's space, and every name must be one of its hyperparameters; both
are checked here, when the study is read. A ``from:`` study is read when the search starts
(``hpstudy.warmstart``): it must exist, be of the same family and have completed trials. The
configurations change the trials, so ``initial_trials`` is frozen with the study (refused on resume).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpstudy.config._values import NUMERIC, At, check_keys, choice_value, integer, mapping
from hpstudy.config.sections import abspath
from hpstudy.config.space import SearchSpace

__all__ = ["InitialTrials", "read_initial_trials", "DEFAULT_TOP_K"]

DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class InitialTrials:
    """Configurations tried first: given ones (complete, in order), or the ``top_k`` best of study ``source``."""

    configurations: tuple[dict[str, Any], ...] = ()
    source: Path | None = None  # the ``from:`` study: its YAML file or its run directory (absolute)
    top_k: int = DEFAULT_TOP_K
    given: tuple[dict[str, Any], ...] = field(default=(), compare=False)  # as written, for to_dict

    def to_dict(self) -> list[dict[str, Any]] | dict[str, Any]:
        """The YAML form again (the values as written; a ``from:`` path made absolute)."""
        if self.source is not None:
            return {"from": str(self.source), "top_k": self.top_k}
        return [dict(values) for values in self.given]


def _unknown(name: str, space: SearchSpace, at: At) -> Exception:
    close = difflib.get_close_matches(name, space.names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return at.error(f"unknown hyperparameter {name!r}{hint}; this study's space ({space.source or 'inline'}) "
                    f"declares: {', '.join(space.names)}")


def _read_value(value: Any, param: Any, at: At) -> Any:
    if isinstance(value, str) and NUMERIC.match(value.strip()):
        value = choice_value(value, at)
    try:
        return param.cast(value)
    except ValueError as exc:
        raise at.error(str(exc)) from None


def _read_configuration(item: Any, space: SearchSpace, at: At) -> tuple[dict[str, Any], dict[str, Any]]:
    """(complete configuration, the values as given) of one list item."""
    item = mapping(item, at, "{learning_rate: 1.0e-3, n_blocks: 3}")
    given: dict[str, Any] = {}
    for name, value in item.items():
        if str(name) not in space:
            raise _unknown(str(name), space, at / name)
        given[str(name)] = _read_value(value, space[str(name)], at / name)
    return {**space.defaults(), **given}, given


def read_initial_trials(value: Any, space: SearchSpace, base: Path, at: At) -> InitialTrials | None:
    """``initial_trials`` of a study: a list of hyperparameter values, or ``{from: STUDY, top_k: K}``.

    Raises:
        ConfigError: an unknown hyperparameter (listing the valid ones), a value outside the space, a
            malformed entry; each names the file, the key and the value.
    """
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list):
        read = [_read_configuration(item, space, at / index) for index, item in enumerate(value)]
        return InitialTrials(configurations=tuple(full for full, _ in read), given=tuple(g for _, g in read))
    value = mapping(value, at, "a list of hyperparameter values, or {from: other_study.yaml, top_k: 3}")
    check_keys(value, ("from", "top_k"), at, "initial_trials")
    source = value.get("from")
    if not isinstance(source, (str, Path)) or str(source) == "":
        raise (at / "from").error(f"must be the path of a study YAML file or run directory, but got {source!r}")
    top_k = integer(value.get("top_k", DEFAULT_TOP_K), at / "top_k", minimum=1)
    return InitialTrials(source=abspath(source, base), top_k=top_k)

