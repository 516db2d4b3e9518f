"""The two model families as Keras Tuner hypermodels, built from a ``SearchSpace``.

Output convention (project-wide): every classifier ends with ``Dense(1, name="logit")`` followed by
``Activation("sigmoid", name="probability", dtype="float32")``. The model outputs the probability of
the positive class, trained with ``binary_crossentropy`` (``from_logits=False``); Grad-CAM reads the
``"logit"`` layer. Metrics are named ``accuracy``, ``auc`` (ROC), ``precision`` and ``recall``, so
the history holds ``val_auc``, ``val_accuracy``, ...

Families (chosen by name from ``FAMILIES``):

* ``baseline_cnn`` — ``n_blocks`` x (Conv2D -> [BatchNorm] -> ReLU -> MaxPool -> [SpatialDropout])
  -> Flatten or GlobalAveragePooling2D -> the dense top. The last block's activation is
  ``block<n_blocks>_relu``.
* ``resnet50v2_head`` — a frozen ResNet50V2 (nested model ``"resnet50v2"``, called with
  ``training=False`` so its BatchNormalization stays in inference mode even when fine-tuned) ->
  ``GlobalAveragePooling2D(name="pool")`` -> the dense top. Grey images are repeated to 3 channels
  inside the model, then ``Rescaling(2, offset=-1)`` maps [0, 1] to ResNet's [-1, 1]: with ImageNet
  weights the study must use the "fixed" normalization (pixels / 255), not standardization.

The dense top (``head_dense<j>`` -> ``head_dropout<j>`` -> ``logit`` -> ``probability``) is built by
one function, ``_dense_top``, used by the full models and by ``build_head`` (a head on pooled
features), so head weights trained on cached backbone features can be copied by layer name
(``copy_head_weights``).

Only hyperparameters declared by the space are registered; the others take ``FALLBACKS``. The batch
size is a real hyperparameter: ``fit`` calls a ``DatasetFactory`` with the tuned batch size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import keras
import keras_tuner
import tensorflow as tf

from hpstudy.errors import ConfigError

if TYPE_CHECKING:
    from hpstudy.config import SearchSpace

__all__ = [
    "OPTIMIZERS", "FAMILIES", "FALLBACKS", "BACKBONE_NAME", "DatasetFactory", "HeadSettings",
    "make_optimizer", "classification_metrics", "compile_classifier", "build_resnet_backbone",
    "build_head", "copy_head_weights", "BaselineCNN", "ResNet50V2Head", "build_hypermodel",
]

BACKBONE_NAME = "resnet50v2"
_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
_IMAGENET_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: Values used for hyperparameters the search space does not declare (never registered).
FALLBACKS: dict[str, Any] = {
    "learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "momentum": 0.9, "weight_decay": 1e-4,
    "l2": 0.0, "n_blocks": 3, "base_filters": 16, "filters_growth": 2, "kernel_size": 3,
    "conv_dropout": 0.0, "use_batchnorm": True, "pooling": "global_avg", "n_dense": 1, "dense_units": 128,
    "dropout": 0.3,
}

_OPTIMIZER_FACTORIES: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "adam": lambda lr, momentum, weight_decay, nesterov: keras.optimizers.Adam(learning_rate=lr),
    "sgd": lambda lr, momentum, weight_decay, nesterov: keras.optimizers.SGD(
        learning_rate=lr, momentum=momentum, nesterov=nesterov),
    "rmsprop": lambda lr, momentum, weight_decay, nesterov: keras.optimizers.RMSprop(learning_rate=lr),
    "adamw": lambda lr, momentum, weight_decay, nesterov: keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=weight_decay),
}
OPTIMIZERS: tuple[str, ...] = tuple(_OPTIMIZER_FACTORIES)


def make_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9, weight_decay: float = 1e-4,
                   nesterov: bool = False) -> keras.optimizers.Optimizer:
    """A fresh optimizer chosen by name; ``momentum`` is used by sgd, ``weight_decay`` by adamw.

    Raises:
        ConfigError: unknown name, or a learning rate that is not positive.
    """
    factory = _OPTIMIZER_FACTORIES.get(str(name).lower())
    if factory is None:
        raise ConfigError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0, but got {learning_rate!r}")
    return factory(float(learning_rate), float(momentum), float(weight_decay), bool(nesterov))


def classification_metrics() -> list[keras.metrics.Metric]:
    """Fresh metric objects: ``accuracy``, ``auc`` (ROC), ``precision``, ``recall`` at threshold 0.5."""
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(curve="ROC", name="auc"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
    ]


def compile_classifier(model: keras.Model, *, optimizer: keras.optimizers.Optimizer,
                       jit_compile: bool = False, steps_per_execution: int = 1) -> keras.Model:
    """Compile ``model`` (probability output) with binary cross-entropy and the metrics above.

    ``steps_per_execution`` > 1 runs several batches per call of the compiled step: it pays for tiny
    models (a head on cached features), whose steps are dominated by the per-call overhead.
    """
    model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=False),
                  metrics=classification_metrics(), jit_compile=jit_compile,
                  steps_per_execution=int(steps_per_execution))
    return model


@dataclass(frozen=True)
class DatasetFactory:
    """Makes a batched ``tf.data.Dataset`` for a given batch size, so ``fit`` can tune the batch size."""

    make: Callable[[int], tf.data.Dataset]

    def __call__(self, batch_size: int) -> tf.data.Dataset:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, but got {batch_size!r}")
        return self.make(int(batch_size))


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


def _regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(l2) if l2 > 0 else None


def _dense_top(x: Any, settings: HeadSettings) -> Any:
    """``n_dense`` x (Dense relu -> Dropout) -> logit -> probability, with fixed layer names."""
    for j in range(1, settings.n_dense + 1):
        x = keras.layers.Dense(settings.dense_units, activation="relu", name=f"head_dense{j}",
                               kernel_regularizer=_regularizer(settings.l2))(x)
        if settings.dropout > 0:
            x = keras.layers.Dropout(settings.dropout, name=f"head_dropout{j}")(x)
    x = keras.layers.Dense(1, name="logit", dtype="float32", kernel_regularizer=_regularizer(settings.l2))(x)
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
    return keras.Model(inputs, _dense_top(inputs, settings), name=name)


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


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (height, width, channels), but got {tuple(input_shape)!r}")
    return shape  # type: ignore[return-value]


def _weights_source(weights: str | Path | None) -> str | Path | None:
    """``"imagenet"``, ``None`` (random) or an existing local weights file."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not str(path).endswith(_WEIGHT_SUFFIXES):
        raise ConfigError(f"weights must be 'imagenet', none or a weights file ({', '.join(_WEIGHT_SUFFIXES)}), "
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
    source = _weights_source(weights)
    try:
        backbone = keras.applications.ResNet50V2(include_top=False, weights=source if source == "imagenet" else None,
                                                 input_shape=(height, width, 3), name=BACKBONE_NAME)
    except Exception as exc:  # the download raises a bare Exception ("URL fetch failure ...")
        if source != "imagenet":
            raise
        raise ConfigError(f"cannot load the ImageNet weights of ResNet50V2 ({exc}); download "
                          f"{_IMAGENET_FILE} and pass its path as weights") from exc
    if isinstance(source, Path):
        try:
            backbone.load_weights(source)
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"weights file {source} does not fit ResNet50V2 without top: {exc}") from exc
    backbone.trainable = False
    return backbone


class _ClassifierHyperModel(keras_tuner.HyperModel):
    """Shared parts: hyperparameter reading, optimizer, compile, and ``fit`` with a tuned batch size."""

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int], jit_compile: bool,
                 name: str) -> None:
        super().__init__(name=name, tunable=True)
        self.space = space
        self.input_shape = _check_input_shape(input_shape)
        self.jit_compile = bool(jit_compile)

    def _get(self, hp: keras_tuner.HyperParameters) -> Callable[[str], Any]:
        """Reader registering ``name`` only if the space declares it, else returning its fallback."""
        return lambda name: self.space.value(hp, name, FALLBACKS[name])

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Register the whole space up front (batch size included) so the oracle samples it from trial 1."""
        for param in self.space.params:
            param.register(hp)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = self._architecture(hp)
        return compile_classifier(model, optimizer=self._optimizer(hp), jit_compile=self.jit_compile)

    def _architecture(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        raise NotImplementedError

    def _optimizer(self, hp: keras_tuner.HyperParameters) -> keras.optimizers.Optimizer:
        get = self._get(hp)
        return make_optimizer(get("optimizer"), float(get("learning_rate")), momentum=float(get("momentum")),
                              weight_decay=float(get("weight_decay")))

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        """``model.fit`` with the tuned batch size.

        ``x`` (and ``validation_data``) may be a ``DatasetFactory`` (called with the batch size) or
        arrays (``batch_size=`` is passed to Keras). A ready-made dataset or generator is refused when
        the space tunes ``batch_size``, because its batches could not follow the tuned value.
        """
        if len(args) > 2:
            raise TypeError("pass x and y positionally and every other fit argument by keyword")
        x = args[0] if args else kwargs.pop("x", None)
        y = args[1] if len(args) > 1 else kwargs.pop("y", None)
        kwargs.pop("batch_size", None)
        batch_size = int(self._get(hp)("batch_size"))
        if isinstance(kwargs.get("validation_data"), DatasetFactory):
            kwargs["validation_data"] = kwargs["validation_data"](batch_size)
        if isinstance(x, DatasetFactory):
            if y is not None:
                raise TypeError("y must be None when x is a DatasetFactory (the datasets yield labels)")
            kwargs.setdefault("shuffle", False)  # no effect on a tf.data pipeline; avoids Keras' warning
            return model.fit(x(batch_size), **kwargs)
        if _is_batched(x):
            if "batch_size" in self.space:
                raise TypeError(f"the space tunes batch_size but x is a ready-made {type(x).__name__}; "
                                "wrap its construction in hpstudy.hypermodels.DatasetFactory")
            return model.fit(x, y, **kwargs)
        return model.fit(x, y, batch_size=batch_size, **kwargs)


def _is_batched(x: Any) -> bool:
    """True for inputs that bring their own batches (datasets, PyDatasets, generators)."""
    return isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) or hasattr(x, "__next__")


class BaselineCNN(_ClassifierHyperModel):
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
                                    kernel_regularizer=_regularizer(l2))(x)
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
        return keras.Model(inputs, _dense_top(x, HeadSettings.read(get)), name=self.name)


class ResNet50V2Head(_ClassifierHyperModel):
    """A dense head on a frozen ResNet50V2 (family ``resnet50v2_head``); see the module docstring."""

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int],
                 weights: str | Path | None = "imagenet", jit_compile: bool = False,
                 name: str = "resnet50v2_head") -> None:
        super().__init__(space, input_shape=input_shape, jit_compile=jit_compile, name=name)
        channels = self.input_shape[2]
        if channels not in (1, 3):
            raise ConfigError(f"resnet50v2_head takes 1 or 3 channels, but input_shape has {channels}")
        _weights_source(weights)  # fail early on a missing file
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
        return keras.Model(inputs, _dense_top(x, HeadSettings.read(self._get(hp))), name=self.name)

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


FAMILIES: dict[str, type[_ClassifierHyperModel]] = {"baseline_cnn": BaselineCNN, "resnet50v2_head": ResNet50V2Head}


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
