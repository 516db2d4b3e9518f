"""``baseline_cnn``: a small CNN trained from scratch.

``n_blocks`` x (Conv2D -> [BatchNorm] -> ReLU -> MaxPool -> [SpatialDropout]) -> Flatten or
GlobalAveragePooling2D -> the dense top. The last block's activation is ``block<n_blocks>_relu``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import keras_tuner

from hpstudy.errors import ConfigError
from hpstudy.models.base import ClassifierHyperModel, regularizer
from hpstudy.models.head import HeadSettings, dense_top

if TYPE_CHECKING:
    from hpstudy.config import SearchSpace

__all__ = ["BaselineCNN"]


class BaselineCNN(ClassifierHyperModel):
    """A small CNN trained from scratch (family ``baseline_cnn``)."""

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int], jit_compile: bool = False,
                 name: str = "baseline_cnn") -> None:
        super().__init__(space, input_shape=input_shape, jit_compile=jit_compile, name=name)

    def _architecture(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        get = self._get(hp)
        n_blocks, base, growth = int(get("n_blocks")), int(get("base_filters")), float(get("filters_growth"))
        kernel, l2, batchnorm = int(get("kernel_size")), float(get("l2")), bool(get("use_batchnorm"))
        conv_dropout, pooling = float(get("conv_dropout")), str(get("pooling"))
        if pooling not in ("flatten", "global_avg"):
            raise ConfigError(f"pooling must be 'flatten' or 'global_avg', but got {pooling!r}")
        inputs = keras.Input(shape=self.input_shape, name="image")
        x = inputs
        for i in range(1, n_blocks + 1):
            filters = max(1, int(round(base * growth ** (i - 1))))
            x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=not batchnorm, name=f"block{i}_conv",
                                    kernel_regularizer=regularizer(l2))(x)
            if batchnorm:
                x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
            x = keras.layers.ReLU(name=f"block{i}_relu")(x)
            x = keras.layers.MaxPooling2D(padding="same", name=f"block{i}_pool")(x)
            if conv_dropout > 0:
                x = keras.layers.SpatialDropout2D(conv_dropout, name=f"block{i}_dropout")(x)
        if pooling == "flatten":
            x = keras.layers.Flatten(name="flatten")(x)
        else:
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, dense_top(x, HeadSettings.read(get)), name=self.name)

