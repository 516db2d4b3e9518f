"""The on-disk layout of a study run directory (see DESIGN.md, "On-disk contract")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StudyPaths"]


@dataclass(frozen=True)
class StudyPaths:
    """Every artefact path of one study, derived from its run directory."""

    root: Path

    @property
    def frozen_config(self) -> Path:
        return self.root / "study.yaml"

    @property
    def state(self) -> Path:
        return self.root / "study.json"

    @property
    def tuner_dir(self) -> Path:
        """Keras Tuner project directory (``directory=root``, ``project_name="tuner"``)."""
        return self.root / "tuner"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def data_stats(self) -> Path:
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

    @property
    def final_dir(self) -> Path:
        return self.root / "final"

    @property
    def finetune_dir(self) -> Path:
        return self.root / "finetune"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    def trial_dir(self, trial_id: str) -> Path:
        return self.tuner_dir / f"trial_{trial_id}"
