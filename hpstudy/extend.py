"""``hpstudy extend``: follow the boundary with a warm-started follow-up study.

The course's rule: when the best value of a hyperparameter is at an edge of its range, extend the range
until you are confident that it contains the best value. ``extend_study`` takes a finished study, widens
every flagged range as ``hpstudy.boundary`` suggests (within the family's hard limits), and writes
``<name>-ext1.yaml`` and ``<space>-ext1.yaml`` beside the originals (``-ext2`` from ``-ext1``, ...): the
same budget and settings as the search ran with (its ``--set`` overrides and data path included), and
``initial_trials: {from: <original>, top_k: K}`` so that the original's best configurations are tried
first, and a seed of its own (the same seed would make the oracle draw the original's configurations
again). Repeat until ``hpstudy status`` says the ranges are settled.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from hpstudy._io import atomic_write_text
from hpstudy._log import quieted
from hpstudy.boundary import boundary_flags, boundary_lines, extend_space, settled_sentence
from hpstudy.config import (
    DEFAULT_TOP_K,
    STUDY_KEYS,
    SearchSpace,
    StudyConfig,
    diff_configs,
    parse_study,
    read_yaml,
    resolve_config,
    stage_config,
)
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_state, study_lock
from hpstudy.search.session import StudyOutcome
from hpstudy.study import run_study
from hpstudy.trials import load_trials

__all__ = ["ExtendResult", "extend_study"]

log = logging.getLogger("hpstudy")
_SUFFIX = re.compile(r"-ext\d+$")
# Settings the follow-up takes from its own definition, not from the original's frozen configuration.
_OWN_KEYS = ("name", "search_space", "initial_trials", "seed")
# Keras Tuner draws hyperparameter values with seeds seed, seed + 1, ... (one per value): a follow-up's seed
# moves that far from the original's, so its own suggestions do not replay the original's.
_SEED_STRIDE = 100_003


@dataclass
class ExtendResult:
    """What ``extend_study`` found and wrote."""

    original: Path
    flags: list[dict[str, Any]]
    study_yaml: Path | None = None  # the follow-up (None: no range to extend, nothing written)
    space_yaml: Path | None = None  # its search-space file (None: nothing written, or an inline space)
    changes: list[str] = field(default_factory=list)  # "n_blocks: int 2..5 -> int 2..7"
    settled: str | None = None
    outcome: StudyOutcome | None = None  # the follow-up's search, with run=True

    def text(self) -> str:
        """What happened, as the CLI shows it."""
        if self.study_yaml is None:
            return f"{self.settled or 'ranges settled'}; nothing to extend in {self.original}."
        lines = [*boundary_lines(self.flags),
                 f"Follow-up study written: {self.study_yaml}"
                 + (f" (search space {self.space_yaml})" if self.space_yaml else " (search space inline)"),
                 "search space changes (old -> new):", *(f"  {change}" for change in self.changes)]
        return "\n".join(lines)


def extend_study(study: str | Path, *, top_k: int = DEFAULT_TOP_K, run: bool = False, verbose: bool = True,
                 fit_verbose: int = 0) -> ExtendResult:
    """Write the follow-up of a finished study with its flagged ranges extended; optionally search it.

    Args:
        study: the study YAML file (the follow-up is written beside it).
        top_k: how many of the study's best completed trials the follow-up tries first.
        run: search the follow-up at once (as ``hpstudy search`` would).
        verbose: log what was written (and the search's lines).
        fit_verbose: Keras ``fit`` verbosity inside the follow-up's trials.

    Returns:
        An ``ExtendResult``; ``study_yaml`` is None when no flagged range can be extended (then no file is
        written).

    Raises:
        StudyError: the study has not been searched, is still running, or its search is unfinished.
        ConfigError: a bad study file, or ``top_k`` < 1.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a whole number >= 1, but got {top_k!r}")
    requested = resolve_config(study)
    if requested.source is None:
        raise ConfigError("extend writes the follow-up beside the study's YAML file: pass its path")
    with quieted(not verbose):
        result = _extend(requested, top_k)
        log.info(result.text())
        if run and result.study_yaml is not None:
            result.outcome = run_study(result.study_yaml, fit_verbose=fit_verbose)
        elif result.study_yaml is not None:
            log.info("It tries the %d best trials of '%s' first and keeps its budget and settings. Search it with:"
                     "\n  hpstudy search %s", top_k, requested.name, result.study_yaml)
    return result


def _extend(requested: StudyConfig, top_k: int) -> ExtendResult:
    paths = StudyPaths(requested.study_dir)
    name = requested.name
    if not read_state(paths):
        raise StudyError(f"cannot extend study '{name}': it has not been searched yet ({paths.state} is missing); "
                         f"run `hpstudy search {requested.source}` first")
    try:
        with study_lock(paths, command="extend"):
            return _extend_finished(requested, paths, top_k)
    except StudyError as exc:
        if "is in use by" in str(exc):  # the lock: the search is running now
            raise StudyError(f"cannot extend study '{name}' while its search runs: {exc}") from None
        raise


def _extend_finished(requested: StudyConfig, paths: StudyPaths, top_k: int) -> ExtendResult:
    state = read_state(paths)
    if state.get("status") != "finished":
        done, planned = state.get("trials_done", "?"), state.get("planned_trials") or "?"
        raise StudyError(f"cannot extend study '{requested.name}': its search is unfinished (status "
                         f"{state.get('status', 'unknown')}, {done} of {planned} trials done); finish it first with "
                         f"`hpstudy search {requested.source}` (it resumes), so the follow-up starts from its best "
                         "trials")
    config = stage_config(requested, stage="extend")
    flags = boundary_flags(load_trials(paths.root), config.search_space, direction=config.objective.direction,
                           image_size=config.image_size)
    new_space, changes = extend_space(config.search_space, flags, image_size=config.image_size)
    result = ExtendResult(original=Path(requested.source), flags=flags)  # type: ignore[arg-type]
    if not changes:
        result.settled = settled_sentence(flags)
        return result
    result.changes = [f"{old.name}: {old.describe()} -> {new.describe()}" for old, new in changes]
    result.study_yaml, result.space_yaml = _write_follow_up(requested, config, new_space, top_k, result.changes)
    return result


# --------------------------------------------------------------------------- writing the follow-up
def _free_number(*patterns: tuple[Path, str]) -> int:
    """The smallest n >= 1 for which no ``folder / pattern.format(n)`` exists."""
    number = 1
    while any((folder / pattern.format(number)).exists() for folder, pattern in patterns):
        number += 1
    return number


def _follow_up_mapping(requested: StudyConfig, config: StudyConfig) -> dict[str, Any]:
    """The original YAML's mapping, with the settings the search actually ran with (overrides, data)."""
    raw = dict(read_yaml(Path(requested.source), "study"))  # type: ignore[arg-type]
    resolved, frozen = requested.to_dict(), config.to_dict()
    for key in STUDY_KEYS:
        if key in _OWN_KEYS or key not in frozen:
            continue
        if diff_configs({key: resolved.get(key)}, {key: frozen[key]}):
            raw[key] = frozen[key]
    return raw


def _dump(header: list[str], mapping: dict[str, Any]) -> str:
    body = yaml.safe_dump(mapping, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body


def _write_follow_up(requested: StudyConfig, config: StudyConfig, space: SearchSpace, top_k: int,
                     changes: list[str]) -> tuple[Path, Path | None]:
    original = Path(requested.source)  # type: ignore[arg-type]
    folder, stem, name = original.parent, _SUFFIX.sub("", original.stem), _SUFFIX.sub("", requested.name)
    number = _free_number((folder, f"{stem}-ext{{}}.yaml"), (folder, f"{name}-ext{{}}"))
    study_path, new_name = folder / f"{stem}-ext{number}.yaml", f"{name}-ext{number}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    why = [f"Written by `hpstudy extend {original.name}` on {stamp}: the best values of study "
           f"'{requested.name}' sat at the edges", "of these ranges, so they are extended (old -> new):",
           *(f"  {change}" for change in changes)]
    space_path = None
    if requested.search_space_path is not None:  # the frozen copy inlines the space: its file is the YAML's
        space_path = _write_space(Path(requested.search_space_path), space, new_name, why)
        search_space: Any = os.path.relpath(space_path, folder)
    else:
        search_space = space.to_dict()
    mapping = _follow_up_mapping(requested, config)
    study = _ordered({**mapping, "name": new_name, "search_space": search_space,
                      "initial_trials": {"from": original.name, "top_k": top_k},
                      "seed": config.seed + _SEED_STRIDE})
    try:
        parse_study(study, source=study_path)
    except ConfigError:
        if space_path is not None:
            space_path.unlink(missing_ok=True)
        raise
    header = [f"{study_path.name}: follow-up of study '{requested.name}' ({original.name}).", *why,
              f"It first tries the {top_k} best trials of '{requested.name}' (initial_trials) and keeps the budget "
              "and settings its search ran with,", f"except the seed ({config.seed} + {_SEED_STRIDE}): "
              "with the same seed the oracle would draw the original's configurations again."]
    atomic_write_text(study_path, _dump(header, study))
    return study_path, space_path


def _write_space(old: Path, space: SearchSpace, study_name: str, why: list[str]) -> Path:
    """``<space>-extN.yaml`` beside ``old`` (the next free N)."""
    stem = _SUFFIX.sub("", old.stem)
    path = old.parent / f"{stem}-ext{_free_number((old.parent, stem + '-ext{}.yaml'))}.yaml"
    atomic_write_text(path, _dump([f"{path.name}: {old.name} extended for study '{study_name}'.", *why],
                                  space.to_dict()))
    return path


def _ordered(study: dict[str, Any]) -> dict[str, Any]:
    """``initial_trials`` right after ``search_space``, the rest in the original's order."""
    initial = study.pop("initial_trials")
    out: dict[str, Any] = {}
    for key, value in study.items():
        out[key] = value
        if key == "search_space":
            out["initial_trials"] = initial
    return out
