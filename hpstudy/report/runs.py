"""Locate and read the study runs a report is about (read-only; nothing here writes).

A study is named by its YAML definition (``studies/<name>.yaml``, loaded with ``hpstudy.config``),
by its run directory (a folder holding ``study.yaml`` / ``trials.csv``), by the frozen ``study.yaml``
inside a run directory, or by a ``StudyConfig`` object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_frozen, read_state
from hpstudy.trials import load_trials
from hpstudy.warmstart import load_history

__all__ = ["StudyRun", "load_run", "compatibility_notes"]


@dataclass(eq=False)
class StudyRun:
    """What a report needs to know about one study run."""

    paths: StudyPaths
    name: str
    frozen: dict[str, Any]
    state: dict[str, Any]
    trials: pd.DataFrame | None
    source: Path | None = None
    notes: list[str] = field(default_factory=list)
    history: pd.DataFrame | None = None  # the trials of the studies this one follows, then its own (warmstart)
    lineage: list[str] = field(default_factory=list)  # those studies' names, oldest first, this one last

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration frozen in ``study.yaml`` (empty when there is none)."""
        return dict(self.frozen.get("config") or {})

    @property
    def family(self) -> str | None:
        return self.config.get("family")

    @property
    def oracle(self) -> str | None:
        return (self.config.get("oracle") or {}).get("type")

    @property
    def objective(self) -> str:
        return (self.config.get("objective") or {}).get("name") or "score"

    @property
    def direction(self) -> str:
        return (self.config.get("objective") or {}).get("direction") or "max"

    @property
    def fingerprint(self) -> str | None:
        return self.frozen.get("data_fingerprint")

    @property
    def command_target(self) -> str:
        """What to put after ``hpstudy <command>`` in a hint: the YAML path when known."""
        return str(self.source) if self.source is not None else f"studies/{self.name}.yaml"


def _is_frozen_document(path: Path) -> bool:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and "config" in document and "frozen_at" in document


def _sibling_yaml(run_dir: Path) -> Path | None:
    """The study definition a run directory was created beside (``studies/<name>.yaml``), if present."""
    candidate = run_dir.parent / f"{run_dir.name}.yaml"
    return candidate if candidate.is_file() else None


def _resolve(study: Any) -> tuple[Path, Path | None]:
    """The run directory of ``study`` and the study YAML it came from (None when not known)."""
    if hasattr(study, "study_dir"):
        return Path(study.study_dir), None
    path = Path(study)
    if path.is_dir():
        if not (StudyPaths(path).frozen_config.exists() or StudyPaths(path).trials_csv.exists()):
            raise StudyError(f"{path} is not a study run directory (no study.yaml or trials.csv in it)")
        return path, _sibling_yaml(path)
    if not path.is_file():
        raise StudyError(f"no study at {path}: give a study YAML file or a study run directory")
    if path.name == StudyPaths(path.parent).frozen_config.name and _is_frozen_document(path):
        return path.parent, _sibling_yaml(path.parent)
    from hpstudy.config import load_study

    return Path(load_study(path).study_dir), path


def load_run(study: Any) -> StudyRun:
    """Read the frozen configuration, state and trials table of one study.

    Raises:
        StudyError: the path is neither a study YAML nor a run directory.
    """
    root, source = _resolve(study)
    paths = StudyPaths(root)
    frozen = read_frozen(paths)
    name = (frozen.get("config") or {}).get("name") or getattr(study, "name", None) or root.name
    try:
        trials: pd.DataFrame | None = load_trials(root)
    except StudyError:
        trials = None
    run = StudyRun(paths=paths, name=str(name), frozen=frozen, state=read_state(paths, strict=False), trials=trials,
                   source=source)
    if not frozen:
        run.notes.append(f"No frozen configuration at {paths.frozen_config}: the study has not been run yet.")
    merged = load_history(root) if trials is not None else None
    if merged is not None:
        run.history, run.lineage = merged
    return run


def _distinct(runs: Sequence[StudyRun], attribute: str) -> dict[str, Any]:
    return {run.name: getattr(run, attribute) for run in runs}


def _differs(values: Mapping[str, Any]) -> bool:
    return len(set(map(str, values.values()))) > 1


def compatibility_notes(runs: Sequence[StudyRun]) -> tuple[bool, list[str]]:
    """Whether the studies compare like for like (family, data, objective), with sentences saying so.

    Returns:
        ``(comparable, sentences)``: comparable is False when family, data fingerprint or objective differ.
    """
    notes, comparable = [], True
    checks = (("family", "model family"), ("fingerprint", "training/validation data (fingerprint)"),
              ("objective", "objective"), ("direction", "objective direction"))
    for attribute, what in checks:
        values = _distinct(runs, attribute)
        if _differs(values):
            comparable = False
            shown = ", ".join(f"{name}: {_short(value)}" for name, value in values.items())
            notes.append(f"Warning: the studies differ in their {what} ({shown}); "
                         "the comparison below is not like for like.")
    if comparable:
        run = runs[0]
        notes.append(f"All {len(runs)} studies use model family {run.family}, objective {run.objective} "
                     f"({run.direction}) and the same training/validation data "
                     f"(fingerprint {_short(run.fingerprint)}).")
    return comparable, notes


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text
