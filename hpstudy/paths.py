"""The on-disk layout of a study run directory: the one place artefact names live.

See ``docs/architecture.md`` ("On-disk contract"). Every stage asks ``StudyPaths`` where an artefact is;
no other module spells a file name of the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StudyPaths", "MODEL_FILE", "HISTORY_FILE", "TRIAL_FILE", "ORACLE_FILE", "TRIAL_META_FILE", "MODELS",
           "LEDGER_FILE", "CURVES_FILE", "CHECKPOINT_FILE"]

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"  # per trial (tuner/trial_<id>/), and of the final and fine-tuned fits
CURVES_FILE = "curves.png"
TRIAL_FILE = "trial.json"  # Keras Tuner's own record of a trial
ORACLE_FILE = "oracle.json"  # Keras Tuner's record of the search
TRIAL_META_FILE = "hpstudy_trial.json"  # hpstudy's: timing, best epoch, metrics at the best epoch, process
CHECKPOINT_FILE = "checkpoint.weights.h5"  # Keras Tuner's (Keras 3) weights of a trial at its best epoch
LEDGER_FILE = "test_ledger.jsonl"
MODELS = ("final", "finetune")  # the models a study saves, by the name `evaluate --model` takes


@dataclass(frozen=True)
class StudyPaths:
    """Every artefact path of one study, derived from its run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- the study as a whole
    @property
    def frozen_config(self) -> Path:
        """``study.yaml``: the resolved configuration, versions, seed and data fingerprint of the search."""
        return self.root / "study.yaml"

    @property
    def state(self) -> Path:
        """``study.json``: status, planned and done trials, best trial, boundary flags."""
        return self.root / "study.json"

    @property
    def lock(self) -> Path:
        """``.lock``: held by the one process that writes the study."""
        return self.root / ".lock"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def initial_trials(self) -> Path:
        """``initial_trials.json``: the configurations tried first, resolved once (``initial_trials:``)."""
        return self.root / "initial_trials.json"

    @property
    def selection_csv(self) -> Path:
        """Top-k re-evaluation runs (configuration, seed, score, best epoch)."""
        return self.root / "selection.csv"

    @property
    def selection_json(self) -> Path:
        """The selection settings the re-evaluation runs were made with, their candidates and result."""
        return self.root / "selection.json"

    @property
    def selection_dir(self) -> Path:
        """Per-run outputs of the re-evaluation (validation predictions)."""
        return self.root / "selection"

    def selection_predictions(self, trial_id: str, seed: int) -> Path:
        """Validation predictions (``index, label, probability``) of one re-evaluation run, trained on train."""
        return self.selection_dir / f"val-{trial_id}-seed{int(seed)}.csv"

    def selection_prediction_files(self, trial_id: str) -> list[Path]:
        """Every ``selection_predictions(trial_id, seed)`` file on disk, by seed."""
        found = [p for p in self.selection_dir.glob(f"val-{trial_id}-seed*.csv") if _seed(p).isdigit()]
        return sorted(found, key=lambda p: int(_seed(p)))

    @property
    def data_stats(self) -> Path:
        """Normalization statistics fitted on the training split only."""
        return self.root / "data_stats.json"

    @property
    def leaks_csv(self) -> Path:
        return self.root / "leaks.csv"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    # ---- Keras Tuner's project
    @property
    def tuner_dir(self) -> Path:
        """Keras Tuner project directory (``directory=root``, ``project_name="tuner"``)."""
        return self.root / "tuner"

    @property
    def oracle_json(self) -> Path:
        return self.tuner_dir / ORACLE_FILE

    def trial_dir(self, trial_id: str) -> Path:
        return self.tuner_dir / f"trial_{trial_id}"

    def trial_json(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_FILE

    def trial_meta(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_META_FILE

    def trial_history(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / HISTORY_FILE

    def trial_checkpoint(self, trial_id: str) -> Path:
        """The trial's weights at its best epoch (kept for the best 3 completed trials of a search)."""
        return self.trial_dir(trial_id) / CHECKPOINT_FILE

    # ---- the final and fine-tuned models
    @property
    def final_dir(self) -> Path:
        return self.root / "final"

    @property
    def best_config(self) -> Path:
        """The winner, its epochs, threshold and normalizer, and the final model's SHA-256."""
        return self.final_dir / "best_config.json"

    @property
    def operating_predictions(self) -> Path:
        """The validation predictions (of train-only models) the threshold and temperature were fitted on."""
        return self.final_dir / "validation_predictions.csv"

    @property
    def finetune_dir(self) -> Path:
        return self.root / "finetune"

    @property
    def lr_backoff(self) -> Path:
        """Every fine-tuning attempt, which model was kept, and its SHA-256."""
        return self.finetune_dir / "lr_backoff.json"

    def model_dir(self, which: str) -> Path:
        """``final/`` or ``finetune/``."""
        _check_model(which)
        return self.final_dir if which == "final" else self.finetune_dir

    def model_file(self, which: str) -> Path:
        return self.model_dir(which) / MODEL_FILE

    def model_record(self, which: str) -> Path:
        """The record holding the SHA-256 of a model: ``best_config.json`` or ``lr_backoff.json``."""
        return self.best_config if which == "final" else self.lr_backoff

    # ---- the test evaluation
    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def ledger(self) -> Path:
        """Every evaluation on the test split (and external sets, probes), one JSON line each."""
        return self.evaluation_dir / LEDGER_FILE

    @property
    def leaks_all_splits(self) -> Path:
        return self.evaluation_dir / "leaks_all_splits.csv"

    def external_leaks_csv(self, dataset: str) -> Path:
        """Images of the external set ``dataset`` that also appear in the study's train/val/test."""
        return self.evaluation_dir / f"leaks_external_{dataset}.csv"

    def evaluation_of(self, which: str, dataset: str = "test") -> Path:
        """Folder of one model's evaluation on ``dataset`` (``test``, or an external set's name)."""
        _check_model(which)
        return self.evaluation_dir / (which if dataset == "test" else f"{which}-{dataset}")

    def metrics_json(self, which: str, dataset: str = "test") -> Path:
        return self.evaluation_of(which, dataset) / "metrics.json"

    def predictions_csv(self, which: str, dataset: str = "test") -> Path:
        return self.evaluation_of(which, dataset) / "predictions.csv"

    def gradcam_figure(self, which: str, group: str) -> Path:
        return self.evaluation_of(which) / f"gradcam_{group}.png"

    def probes_json(self, which: str) -> Path:
        """The shortcut probes of one model on the test split: AUCs, Grad-CAM mass fractions, verdicts."""
        return self.evaluation_of(which) / "probes.json"

    def probes_figure(self, which: str) -> Path:
        return self.evaluation_of(which) / "probes.png"

    # ---- distributed workers and repeated studies
    @property
    def workers_dir(self) -> Path:
        return self.root / "workers"

    def worker_heartbeat(self, worker_id: str) -> Path:
        return self.workers_dir / f"{worker_id}.json"

    def worker_log(self, worker_id: str) -> Path:
        return self.workers_dir / f"{worker_id}.log"

    def repeat(self, index: int) -> Path:
        """Run directory of repeat ``index`` of an oracle comparison (itself a study directory)."""
        return self.root / f"repeat-{int(index)}"


def _seed(path: Path) -> str:
    return path.stem.rpartition("-seed")[2]


def _check_model(which: str) -> None:
    if which not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, but got {which!r}")
