"""The two model families as Keras Tuner hypermodels, built from a ``SearchSpace``, and their training helpers.

Output convention (project-wide): every classifier ends with ``Dense(1, name="logit")`` followed by
``Activation("sigmoid", name="probability", dtype="float32")``. The model outputs the probability of
the positive class, trained with ``binary_crossentropy`` (``from_logits=False``); Grad-CAM reads the
``"logit"`` layer. Metrics are named ``accuracy``, ``auc`` (ROC), ``precision`` and ``recall``, so
the history holds ``val_auc``, ``val_accuracy``, ...

Families, chosen by name from ``FAMILIES``: ``baseline_cnn`` (``models.cnn``) and ``resnet50v2_head``
(``models.resnet``, which also holds ``HeadOnFeatures``, the head searched on cached backbone features).
The dense top both share is ``models.head``; optimizers, metrics, compile and the hypermodel base are
``models.base``; fitting, saving and history helpers every stage uses are ``models.training``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import keras_tuner

from hpstudy.errors import ConfigError
from hpstudy.models.base import (
    FALLBACKS,
    OPTIMIZERS,
    ClassifierHyperModel,
    DatasetFactory,
    classification_metrics,
    compile_classifier,
    hyperparameters_object,
    make_optimizer,
)
from hpstudy.models.cnn import BaselineCNN
from hpstudy.models.head import HeadSettings, build_head, copy_head_weights
from hpstudy.models.resnet import (
    BACKBONE_NAME,
    HeadOnFeatures,
    ResNet50V2Head,
    build_resnet_backbone,
    head_on_features,
)

if TYPE_CHECKING:
    from hpstudy.config import SearchSpace

__all__ = [
    "OPTIMIZERS", "FAMILIES", "FALLBACKS", "BACKBONE_NAME", "DatasetFactory", "HeadSettings",
    "make_optimizer", "classification_metrics", "compile_classifier", "build_resnet_backbone",
    "build_head", "copy_head_weights", "BaselineCNN", "ResNet50V2Head", "HeadOnFeatures", "head_on_features",
    "build_hypermodel", "hyperparameters_object",
]

FAMILIES: dict[str, type[ClassifierHyperModel]] = {"baseline_cnn": BaselineCNN, "resnet50v2_head": ResNet50V2Head}


def build_hypermodel(family: str, space: SearchSpace, *, input_shape: tuple[int, int, int],
                     weights: str | Path | None = "imagenet", jit_compile: bool = False) -> keras_tuner.HyperModel:
    """The hypermodel of ``family`` over ``space`` (``weights`` only matters for resnet50v2_head).

    Raises:
        ConfigError: unknown family, a space written for another family, or bad inputs/weights.
    """
    cls = FAMILIES.get(family)
    if cls is None:
        raise ConfigError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")
    if getattr(space, "family", None) and space.family != family:
        raise ConfigError(f"search space {getattr(space, 'source', '')} is for family {space.family!r}, "
                          f"not {family!r}")
    if cls is ResNet50V2Head:
        return ResNet50V2Head(space, input_shape=input_shape, weights=weights, jit_compile=jit_compile)
    return cls(space, input_shape=input_shape, jit_compile=jit_compile)
