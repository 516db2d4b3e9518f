"""The dense top both families end with, and the head alone on pooled features.

``head_dense<j>`` -> ``head_dropout<j>`` -> ``logit`` -> ``probability``, built by one function
(``dense_top``) for the full models and for ``build_head`` (a head on pooled features), so head weights
trained on cached backbone features move into the full model by layer name (``copy_head_weights``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras

from hpstudy.models.base import FALLBACKS, regularizer

__all__ = ["HeadSettings", "dense_top", "build_head", "copy_head_weights"]


@dataclass(frozen=True)
class HeadSettings:
    """Hyperparameters of the dense top shared by both families."""

    n_dense: int = FALLBACKS["n_dense"]
    dense_units: int = FALLBACKS["dense_units"]
    dropout: float = FALLBACKS["dropout"]
    l2: float = FALLBACKS["l2"]

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> HeadSettings:
        """Settings from ``get(name)`` (a space/hp reader or ``values.get`` with fallbacks)."""
        return cls(n_dense=int(get("n_dense")), dense_units=int(get("dense_units")),
                   dropout=float(get("dropout")), l2=float(get("l2")))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> HeadSettings:
        """Settings from plain values, e.g. ``hp.values`` or a ``best_config.json``."""
        return cls.read(lambda name: values.get(name, FALLBACKS[name]))



def dense_top(x: Any, settings: HeadSettings) -> Any:
    """``n_dense`` x (Dense relu -> Dropout) -> logit -> probability, with fixed layer names."""
    for j in range(1, settings.n_dense + 1):
        x = keras.layers.Dense(settings.dense_units, activation="relu", name=f"head_dense{j}",
                               kernel_regularizer=regularizer(settings.l2))(x)
        if settings.dropout > 0:
            x = keras.layers.Dropout(settings.dropout, name=f"head_dropout{j}")(x)
    x = keras.layers.Dense(1, name="logit", dtype="float32", kernel_regularizer=regularizer(settings.l2))(x)
    return keras.layers.Activation("sigmoid", name="probability", dtype="float32")(x)


def build_head(settings: HeadSettings | Mapping[str, Any], *, feature_dim: int,
               name: str = "resnet50v2_head_features") -> keras.Model:
    """The dense top alone, on pooled features ``Input((feature_dim,), name="features")`` (uncompiled).

    Its layers carry the same names as in the full ``resnet50v2_head`` model, so after training on
    cached backbone features the weights move over with ``copy_head_weights``.
    """
    if not isinstance(settings, HeadSettings):
        settings = HeadSettings.from_values(settings)
    inputs = keras.Input(shape=(int(feature_dim),), name="features")
    return keras.Model(inputs, dense_top(inputs, settings), name=name)


def copy_head_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of the dense-top layers (``head_*``, ``logit``) from ``source`` into ``target``.

    Returns:
        Names of the layers copied.

    Raises:
        ValueError: a head layer of ``source`` is missing from ``target`` or has other shapes.
    """
    copied = []
    for layer in source.layers:
        if layer.weights and (layer.name.startswith("head_") or layer.name == "logit"):
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied.append(layer.name)
    return copied


