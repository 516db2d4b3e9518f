"""``resnet50v2_head``: a dense head on a frozen ResNet50V2, and the same head searched on cached features.

The backbone is a nested model ``"resnet50v2"``, called with ``training=False`` so its
BatchNormalization stays in inference mode even when fine-tuned, followed by
``GlobalAveragePooling2D(name="pool")`` and the dense top. Grey images are repeated to 3 channels inside
the model, then ``Rescaling(2, offset=-1)`` maps [0, 1] to ResNet's [-1, 1]: with ImageNet weights the
study must use the "fixed" normalization (pixels / 255), not standardization.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner

from hpstudy.config import WEIGHT_SUFFIXES
from hpstudy.errors import ConfigError
from hpstudy.models.base import ClassifierHyperModel, compile_classifier
from hpstudy.models.head import HeadSettings, build_head, dense_top

if TYPE_CHECKING:
    from hpstudy.config import SearchSpace

__all__ = ["BACKBONE_NAME", "IMAGENET_WEIGHTS_FILE", "HEAD_STEPS_PER_EXECUTION", "weights_source",
           "build_resnet_backbone", "ResNet50V2Head", "HeadOnFeatures", "head_on_features"]

BACKBONE_NAME = "resnet50v2"
IMAGENET_WEIGHTS_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
HEAD_STEPS_PER_EXECUTION = 32  # a head step is ~1 ms of compute and ~3 ms of call overhead on a CPU


def weights_source(weights: str | Path | None) -> str | Path | None:
    """``"imagenet"``, ``None`` (random) or an existing local weights file."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise ConfigError(f"weights must be 'imagenet', none or a weights file ({', '.join(WEIGHT_SUFFIXES)}), "
                          f"but got {str(weights)!r}")
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    return path


def build_resnet_backbone(input_shape: tuple[int, int, int], weights: str | Path | None) -> keras.Model:
    """ResNet50V2 without its top, frozen, named ``"resnet50v2"``, for (height, width, 3) inputs.

    Args:
        input_shape: image shape; only height and width are used (the backbone takes 3 channels).
        weights: ``"imagenet"`` (downloaded once by Keras), ``None``/``"none"``, or a local weights
            file such as the official ``resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Raises:
        ConfigError: images smaller than 32 px, a missing or incompatible weights file, or ImageNet
            weights that cannot be downloaded.
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    if min(height, width) < 32:
        raise ConfigError(f"resnet50v2_head needs images of at least 32x32 pixels, but got {height}x{width}")
    source = weights_source(weights)
    try:
        backbone = keras.applications.ResNet50V2(include_top=False, weights=source if source == "imagenet" else None,
                                                 input_shape=(height, width, 3), name=BACKBONE_NAME)
    except Exception as exc:  # the download raises a bare Exception ("URL fetch failure ...")
        if source != "imagenet":
            raise
        raise ConfigError(f"cannot load the ImageNet weights of ResNet50V2 ({exc}); download "
                          f"{IMAGENET_WEIGHTS_FILE} and pass its path as weights") from exc
    if isinstance(source, Path):
        try:
            backbone.load_weights(source)
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"weights file {source} does not fit ResNet50V2 without top: {exc}") from exc
    backbone.trainable = False
    return backbone


class ResNet50V2Head(ClassifierHyperModel):
    """A dense head on a frozen ResNet50V2 (family ``resnet50v2_head``); see the module docstring."""

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int],
                 weights: str | Path | None = "imagenet", jit_compile: bool = False,
                 name: str = "resnet50v2_head") -> None:
        super().__init__(space, input_shape=input_shape, jit_compile=jit_compile, name=name)
        channels = self.input_shape[2]
        if channels not in (1, 3):
            raise ConfigError(f"resnet50v2_head takes 1 or 3 channels, but input_shape has {channels}")
        weights_source(weights)  # fail early on a missing file
        self.weights = weights

    def _pooled_features(self) -> tuple[Any, Any]:
        """``(image input, pooled backbone features)``: everything below the dense top."""
        inputs = keras.Input(shape=self.input_shape, name="image")
        x = inputs
        if self.input_shape[2] == 1:
            x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_resnet_range")(x)  # [0, 1] -> [-1, 1]
        # Keras draws every initializer's seed from Python's `random`: restoring its state after the
        # backbone gives the head the same initial weights as the head alone (build_head_model) under
        # the same seed, so a search on cached features starts each trial where the full model would.
        state = random.getstate()
        backbone = build_resnet_backbone(self.input_shape, self.weights)
        random.setstate(state)
        x = backbone(x, training=False)
        return inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x)

    def _architecture(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        inputs, x = self._pooled_features()
        return keras.Model(inputs, dense_top(x, HeadSettings.read(self._get(hp))), name=self.name)

    def feature_extractor(self) -> keras.Model:
        """Normalized image -> pooled backbone features, with exactly the layers of the full model.

        ``hpstudy.features`` caches its outputs; a head trained on them is copied into the full model.
        """
        inputs, x = self._pooled_features()
        return keras.Model(inputs, x, name=f"{BACKBONE_NAME}_features")

    def build_head_model(self, hp: keras_tuner.HyperParameters, *, feature_dim: int = 2048,
                         steps_per_execution: int = 1) -> keras.Model:
        """The compiled head alone on pooled features, registering the same hyperparameters as ``build``."""
        head = build_head(HeadSettings.read(self._get(hp)), feature_dim=feature_dim)
        return compile_classifier(head, optimizer=self._optimizer(hp), jit_compile=self.jit_compile,
                                  steps_per_execution=steps_per_execution)




class HeadOnFeatures(ResNet50V2Head):
    """The ``resnet50v2_head`` family searched on cached backbone features (``hpstudy.features``).

    ``build`` gives the compiled head alone (``build_head_model``: the same hyperparameters, layer
    names and optimizer as the full model's top); ``build_full`` gives the full model on images, with
    the backbone weights the features were computed with.
    """

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int], weights: str,
                 feature_dim: int = 2048, jit_compile: bool = False) -> None:
        super().__init__(space, input_shape=input_shape, weights=weights, jit_compile=jit_compile)
        self.feature_dim = int(feature_dim)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        return self.build_head_model(hp, feature_dim=self.feature_dim, steps_per_execution=HEAD_STEPS_PER_EXECUTION)

    def build_full(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The compiled full model (image -> backbone -> head) with the same hyperparameters."""
        return ResNet50V2Head.build(self, hp)


def head_on_features(space: SearchSpace | None, input_shape: tuple[int, int, int], weights: str,
                     jit_compile: bool = False, feature_dim: int = 2048) -> HeadOnFeatures:
    """A ``HeadOnFeatures`` over ``space`` (an empty space when None: only the feature extractor is used)."""
    from hpstudy.config import SearchSpace

    return HeadOnFeatures(space or SearchSpace("resnet50v2_head", ()), input_shape=input_shape, weights=weights,
                          feature_dim=feature_dim, jit_compile=jit_compile)
