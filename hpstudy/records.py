"""Typed records of a study run: ``study.json``, ``best_config.json``, ``lr_backoff.json``, metrics, the ledger.

Each record is read and written here only, through ``StudyPaths``; stages exchange these objects instead
of re-reading JSON with their own tolerant readers. Readers that a report uses (missing file -> None)
and readers that a stage depends on (a broken file is a ``StudyError`` naming it) are kept apart.

The test ledger (``evaluation/test_ledger.jsonl``) holds every evaluation of a model on the test split
(and on external sets, field ``dataset``), one JSON line each: ``started`` just before the model first
sees the images, then ``completed`` with the metrics, or ``failed`` with the reason when the attempt ended
with an error before any metric was reported. Each set is used once per model (rule 5 of
``docs/architecture.md``): a second evaluation of the same model file (same SHA-256) is refused unless
forced, and a forced one is recorded as such; a failed attempt does not count as a use. Shortcut probes
run on the test split after its evaluation are recorded too, with ``"kind": "probe"``: they are never
counted as an evaluation.

The study lock (``.lock``) lets one process at a time write a study.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpstudy._io import append_line, atomic_write_json, atomic_write_text, read_json, utc_now
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.paths import StudyPaths

log = logging.getLogger("hpstudy")

__all__ = ["read_state", "update_state", "read_frozen", "write_frozen", "BestConfig", "read_best_config",
           "write_best_config", "read_model_record", "read_lr_backoff", "write_lr_backoff", "read_metrics",
           "write_metrics", "Ledger", "load_ledger", "read_ledger", "check_first_evaluation", "record_evaluation",
           "ledger_entries", "study_lock", "read_selection", "write_selection", "update_best_config", "PROBE_KIND",
           "is_probe", "evaluation_entries", "read_probes", "write_probes",
           "read_initial_record", "write_initial_record"]


# --------------------------------------------------------------------------- study.json
def read_state(paths: StudyPaths, *, strict: bool = True) -> dict[str, Any]:
    """The study's ``study.json`` (empty dict before the first run, or when broken and not ``strict``).

    Raises:
        StudyError: ``strict`` and the file exists but cannot be read or parsed.
    """
    try:
        state = read_json(paths.state)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise StudyError(f"{paths.state} cannot be read ({exc}); it only records progress: delete it, and "
                         "`hpstudy search` (which resumes from the tuner files) writes it again") from None
    return state if isinstance(state, dict) else {}


def update_state(paths: StudyPaths, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into ``study.json`` (atomically) and return the new state."""
    state = read_state(paths)
    state.update(updates)
    state["updated"] = utc_now()
    atomic_write_json(paths.state, state)
    return state


# --------------------------------------------------------------------------- study.yaml
def read_frozen(paths: StudyPaths) -> dict[str, Any]:
    """The frozen ``study.yaml`` document of the search (empty dict before the first search).

    Raises:
        StudyError: the file exists but is not a frozen study document.
    """
    import yaml

    try:
        document = yaml.safe_load(paths.frozen_config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"{paths.frozen_config} is not valid YAML ({str(exc).splitlines()[0]}); it is written by "
                         "hpstudy: restore it, or pass --overwrite to delete the run and start again") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise StudyError(f"{paths.frozen_config} is not a frozen study document (no 'config' mapping); restore it, "
                         "or pass --overwrite to delete the run and start again")
    return document


def write_frozen(paths: StudyPaths, document: dict[str, Any]) -> Path:
    import yaml

    return atomic_write_text(paths.frozen_config, yaml.safe_dump(document, sort_keys=False))


# --------------------------------------------------------------------------- initial_trials.json
def read_initial_record(paths: StudyPaths) -> dict[str, Any] | None:
    """The configurations a study tries first, as resolved on its first search (None before that).

    Raises:
        StudyError: the file exists but is not such a record.
    """
    try:
        record = read_json(paths.initial_trials)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        record, problem = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        problem = "no 'trials' list"
    if isinstance(record, dict) and isinstance(record.get("trials"), list):
        return record
    raise StudyError(f"{paths.initial_trials} is broken ({problem}); it records the configurations this study "
                     "tried first: restore it, or pass --overwrite to delete the run and start again")


def write_initial_record(paths: StudyPaths, record: dict[str, Any]) -> Path:
    """Write ``initial_trials.json`` (atomically)."""
    return atomic_write_json(paths.initial_trials, record)


# --------------------------------------------------------------------------- final/best_config.json
@dataclass(frozen=True)
class BestConfig:
    """What ``finalize`` trained and saved: the winner, its epochs, the normalizer and the model's SHA-256.

    ``extra`` keeps keys this version does not know, so reading and writing back loses nothing.
    """

    trial_id: str
    score: float
    objective: str
    hyperparameters: dict[str, Any]
    best_epoch: int
    epochs: int
    family: str
    model: str
    model_sha256: str
    scaled_by_data_ratio: bool = False
    train_val_images: int = 0
    normalizer: dict[str, Any] = field(default_factory=dict)
    normalizer_fitted_on: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


def read_best_config(paths: StudyPaths) -> BestConfig | None:
    """``final/best_config.json``, or None when it is missing, unreadable or incomplete."""
    data = read_json(paths.best_config, default=None)
    if not isinstance(data, dict):
        return None
    try:
        return BestConfig.from_dict(data)
    except TypeError:  # a required key is missing: not a record this study can trust
        return None


def write_best_config(paths: StudyPaths, record: BestConfig) -> Path:
    return atomic_write_json(paths.best_config, record.to_dict())


def update_best_config(paths: StudyPaths, **extra: Any) -> BestConfig:
    """Add or replace records kept in ``best_config.json``'s ``extra`` (e.g. ``threshold``), atomically.

    Raises:
        StudyError: there is no complete ``best_config.json`` yet.
    """
    record = read_best_config(paths)
    if record is None:
        raise StudyError(f"{paths.best_config} is missing or incomplete: run `hpstudy finalize` first")
    updated = replace(record, extra={**record.extra, **extra})
    write_best_config(paths, updated)
    return updated


# --------------------------------------------------------------------------- selection.json
def read_selection(paths: StudyPaths) -> dict[str, Any] | None:
    """``selection.json`` (settings, candidates and result of the top-k re-evaluation), or None.

    None when it is missing or unreadable; ``hpstudy confirm`` then refuses to reuse runs whose settings
    it cannot know.
    """
    data = read_json(paths.selection_json, default=None)
    return data if isinstance(data, dict) else None


def write_selection(paths: StudyPaths, record: dict[str, Any]) -> Path:
    return atomic_write_json(paths.selection_json, record)


# --------------------------------------------------------------------------- finetune/lr_backoff.json
def read_lr_backoff(paths: StudyPaths) -> dict[str, Any] | None:
    """``finetune/lr_backoff.json`` (every fine-tuning attempt and the model kept), or None."""
    data = read_json(paths.lr_backoff, default=None)
    return data if isinstance(data, dict) else None


def write_lr_backoff(paths: StudyPaths, record: dict[str, Any]) -> Path:
    return atomic_write_json(paths.lr_backoff, record)


def read_model_record(paths: StudyPaths, which: str) -> dict[str, Any] | None:
    """The record holding a saved model's SHA-256 (``best_config.json`` or ``lr_backoff.json``), as read.

    Read as plain JSON: whatever else it holds, its ``model_sha256`` decides whether a model file is the
    one the study saved.
    """
    data = read_json(paths.model_record(which), default=None)
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- evaluation/<model>/metrics.json
def read_metrics(paths: StudyPaths, which: str, dataset: str = "test") -> dict[str, Any] | None:
    data = read_json(paths.metrics_json(which, dataset), default=None)
    return data if isinstance(data, dict) else None


def write_metrics(paths: StudyPaths, which: str, result: dict[str, Any], dataset: str = "test") -> Path:
    return atomic_write_json(paths.metrics_json(which, dataset), result)


# --------------------------------------------------------------------------- evaluation/<model>/probes.json
def read_probes(paths: StudyPaths, which: str) -> dict[str, Any] | None:
    """The shortcut probes of a model (``probes.json``), or None when missing or unreadable."""
    data = read_json(paths.probes_json(which), default=None)
    return data if isinstance(data, dict) else None


def write_probes(paths: StudyPaths, which: str, result: dict[str, Any]) -> Path:
    return atomic_write_json(paths.probes_json(which), result)


# --------------------------------------------------------------------------- the test ledger
@dataclass(frozen=True)
class Ledger:
    """The parsed ledger: its entries, and the lines that did not parse (1-based number, text)."""

    entries: list[dict[str, Any]]
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def load_ledger(path: str | Path) -> Ledger:
    """Every entry of a ledger, and every line that does not parse (logged as a warning, never dropped)."""
    path = Path(path)
    if not path.exists():
        return Ledger([])
    entries, unreadable = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            unreadable.append((number, line))
    for number, _ in unreadable:
        log.warning("warning: %s line %d is not a ledger record (a write cut short?); it is kept in the file and "
                    "counted as an evaluation of any model whose SHA-256 it mentions", path, number)
    return Ledger(entries, unreadable)


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """All parseable entries of a ledger (unparseable lines are reported by ``load_ledger``)."""
    return load_ledger(path).entries


def ledger_entries(paths: StudyPaths) -> list[dict[str, Any]]:
    """The entries of a study's ledger."""
    return read_ledger(paths.ledger)


PROBE_KIND = "probe"
_PROBE_MARK = f'"kind": "{PROBE_KIND}"'  # in every probe line before the SHA-256 (keys are sorted)


def is_probe(entry: dict[str, Any]) -> bool:
    """Whether a ledger entry records a shortcut probe (``"kind": "probe"``): never an evaluation or a use."""
    return entry.get("kind") == PROBE_KIND


def evaluation_entries(paths: StudyPaths) -> list[dict[str, Any]]:
    """The entries of a study's ledger that record evaluations (probes left out)."""
    return [e for e in ledger_entries(paths) if not is_probe(e)]


def _uses(ledger: Ledger, model_sha256: str, dataset: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Earlier evaluations of this model on ``dataset``, and unreadable lines that mention the model.

    Probe records are not evaluations: they neither count as a use nor block one.
    """
    earlier = [e for e in ledger.entries if not is_probe(e)
               and e.get("model_sha256") == model_sha256 and e.get("dataset", "test") == dataset]
    torn = [number for number, text in ledger.unreadable if model_sha256[:16] in text and _PROBE_MARK not in text]
    return earlier, torn


def check_first_evaluation(path: str | Path, model_sha256: str, *, force: bool = False,
                           dataset: str = "test") -> list[dict[str, Any]]:
    """Earlier uses of this model file on ``dataset``; raises when there is one and ``force`` is not set.

    A ``failed`` attempt (one that ended with an error and no metrics; its ``started`` and ``failed``
    records share an ``attempt`` id) does not use the set up: the next evaluation goes ahead without
    ``force``, and says so.

    Raises:
        EvaluationError: the model was already evaluated (or shown the images, or a torn ledger line
            mentions it) and ``force`` is False.
    """
    earlier, torn = _uses(load_ledger(path), model_sha256, dataset)
    failed_attempts = {e.get("attempt") for e in earlier if e.get("status") == "failed" and e.get("attempt")}
    uses = [e for e in earlier if e.get("status", "completed") != "failed"
            and not (e.get("status") == "started" and e.get("attempt") in failed_attempts)]
    if (uses or torn) and not force:
        first = uses[0] if uses else {}
        completed = any(e.get("status", "completed") == "completed" for e in uses)
        how = "evaluated" if completed else "shown to the model (an evaluation that did not complete)"
        when = f"at {first.get('time')}" if uses else f"(torn ledger line {torn[0]})"
        raise EvaluationError(
            f"model {first.get('model', '')} (sha256 {model_sha256[:12]}…) was already {how} on {_set_name(dataset)} "
            f"{when} (ledger {path}). Each set is used once; pass --force to evaluate again "
            "(the repeat is recorded in the ledger)."
        )
    failed = [e for e in earlier if e.get("status") == "failed"]
    if failed and not uses and not torn:
        log.info("note: the last evaluation of this model on %s failed (%s); evaluating again without --force, as "
                 "nothing was reported", _set_name(dataset), failed[-1].get("reason", "no reason recorded"))
    return uses


def _set_name(dataset: str) -> str:
    return "the test split" if dataset == "test" else f"the external set {dataset!r}"


def record_evaluation(path: str | Path, entry: dict[str, Any]) -> None:
    """Append one evaluation record to the ledger (on a line of its own, fsynced)."""
    append_line(path, json.dumps(entry, sort_keys=True))


# --------------------------------------------------------------------------- the study lock
_HELD: dict[str, list[Any]] = {}  # lock path -> [open file, depth]: the lock is re-entrant within a process


@contextlib.contextmanager
def study_lock(paths: StudyPaths, *, command: str) -> Iterator[None]:
    """Hold the study's exclusive lock (``flock`` on ``.lock``) while the block runs.

    The operating system releases it when the process ends, even by ``kill -9``: no stale lock. Nested
    uses in one process (``finalize`` running ``confirm``) share it.

    Raises:
        StudyError: another process holds it ("study X is in use by PID N on HOST since T").
    """
    key = str(paths.lock.resolve()) if paths.lock.parent.exists() else str(paths.lock)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    handle = _acquire(paths, command)
    _HELD[key] = [handle, 1]
    try:
        yield
    finally:
        del _HELD[key]
        handle.close()  # closing the descriptor releases the lock


def _acquire(paths: StudyPaths, command: str) -> Any:
    import fcntl

    paths.root.mkdir(parents=True, exist_ok=True)
    handle = open(paths.lock, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while the lock is held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StudyError(f"study {paths.root.name} is in use by {holder}; wait for it to finish (or stop it), "
                         "then run the command again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"PID {os.getpid()} on {socket.gethostname()} since {utc_now()} ({command})\n")
    handle.flush()
    return handle
