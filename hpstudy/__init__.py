"""hpstudy: rigorous, resumable Keras Tuner hyperparameter studies for medical-image classifiers.

The public API is re-exported here and loaded lazily, so ``import hpstudy`` stays fast and does not
start TensorFlow until a function that needs it is called. The library logs to
``logging.getLogger("hpstudy")``, which prints to standard output by default (see ``hpstudy._log``).
"""

from __future__ import annotations

import importlib
from typing import Any

from hpstudy._log import disable_default_handler, install_default_handler
from hpstudy.errors import ConfigError, DataError, EvaluationError, HpstudyError, LeakError, StudyError

install_default_handler()

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
    "build_hypermodel": "hpstudy.models",
    "resolve_config": "hpstudy.config",
    "run_study": "hpstudy.study",
    "DistributedSettings": "hpstudy.search.distributed",
    "study_status": "hpstudy.study",
    "export_trials": "hpstudy.study",
    "StudyOutcome": "hpstudy.study",
    "load_trials": "hpstudy.trials",
    "trials_frame": "hpstudy.trials",
    "best_trial": "hpstudy.trials",
    "useful_fraction": "hpstudy.trials",
    "boundary_flags": "hpstudy.boundary",
    "hyperparameter_importance": "hpstudy.report.importance",
    "confirm_study": "hpstudy.selection",
    "extend_study": "hpstudy.extend",
    "finalize_study": "hpstudy.finalize",
    "evaluate_study": "hpstudy.evaluate",
    "evaluate_external": "hpstudy.evaluate",
    "choose_threshold": "hpstudy.calibration",
    "fit_temperature": "hpstudy.calibration",
    "apply_temperature": "hpstudy.calibration",
    "brier_score": "hpstudy.calibration",
    "expected_calibration_error": "hpstudy.calibration",
    "gradcam_study": "hpstudy.explain",
    "probe_study": "hpstudy.explain",
    "heatmap": "hpstudy.gradcam",
    "overlay": "hpstudy.gradcam_figures",
    "binary_metrics": "hpstudy.metrics",
    "bootstrap_ci": "hpstudy.metrics",
    "run_demo": "hpstudy.demo",
    "compare_studies": "hpstudy.repeats",
}

__all__ = [
    "__version__",
    "HpstudyError",
    "ConfigError",
    "DataError",
    "LeakError",
    "StudyError",
    "EvaluationError",
    "disable_default_handler",
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
