"""hpstudy: rigorous, resumable Keras Tuner hyperparameter studies for medical-image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
