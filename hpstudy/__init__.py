"""hpstudy: rigorous, resumable Keras Tuner hyperparameter studies for medical-image classifiers.

The public API is re-exported here and loaded lazily, so ``import hpstudy`` stays fast and does not
start TensorFlow until a function that needs it is called.
"""

from __future__ import annotations

import importlib
from typing import Any

from hpstudy.errors import ConfigError, DataError, EvaluationError, HpstudyError, LeakError, StudyError

__version__ = "0.1.0"

_LAZY = {
    "load_study": "hpstudy.config",
    "load_search_space": "hpstudy.config",
    "StudyConfig": "hpstudy.config",
    "SearchSpace": "hpstudy.config",
    "discover": "hpstudy.data.discover",
    "DataSource": "hpstudy.data.discover",
    "check_leaks": "hpstudy.data.leak",
    "explore": "hpstudy.data.explore",
    "make_phantom": "hpstudy.data.phantom",
    "Normalizer": "hpstudy.data.pipeline",
    "make_dataset": "hpstudy.data.pipeline",
    "build_hypermodel": "hpstudy.hypermodels",
    "run_study": "hpstudy.study",
    "DistributedSettings": "hpstudy.distributed",
    "study_status": "hpstudy.study",
    "export_trials": "hpstudy.study",
    "StudyOutcome": "hpstudy.study",
    "load_trials": "hpstudy.trials",
    "trials_frame": "hpstudy.trials",
    "best_trial": "hpstudy.trials",
    "boundary_flags": "hpstudy.trials",
    "finalize_study": "hpstudy.finalize",
    "evaluate_study": "hpstudy.assess",
    "gradcam_study": "hpstudy.assess",
    "heatmap": "hpstudy.gradcam",
    "overlay": "hpstudy.gradcam",
    "binary_metrics": "hpstudy.evaluate",
    "bootstrap_ci": "hpstudy.evaluate",
    "run_demo": "hpstudy.demo",
}

__all__ = [
    "__version__",
    "HpstudyError",
    "ConfigError",
    "DataError",
    "LeakError",
    "StudyError",
    "EvaluationError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpstudy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
