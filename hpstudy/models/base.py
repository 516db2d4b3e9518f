"""What both model families share: fallback values, optimizers, metrics, compile, and the hypermodel base.

Only hyperparameters declared by the search space are registered; the others take ``FALLBACKS``. The
batch size is a real hyperparameter: ``fit`` calls a ``DatasetFactory`` with the tuned batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import tensorflow as tf

from hpstudy.errors import ConfigError

if TYPE_CHECKING:
    from hpstudy.config import SearchSpace

__all__ = ["FALLBACKS", "OPTIMIZERS", "make_optimizer", "classification_metrics", "compile_classifier",
           "DatasetFactory", "ClassifierHyperModel", "regularizer", "check_input_shape", "hyperparameters_object"]

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



def regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """An L2 kernel regularizer, or None for ``l2 == 0``."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    """``(height, width, channels)`` as ints.

    Raises:
        ConfigError: not three positive sides.
    """
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (height, width, channels), but got {tuple(input_shape)!r}")
    return shape  # type: ignore[return-value]


def hyperparameters_object(space: SearchSpace, values: dict[str, Any]) -> keras_tuner.HyperParameters:
    """A ``keras_tuner.HyperParameters`` holding exactly ``values`` for the space's parameters."""
    hp = keras_tuner.HyperParameters()
    for param in space.params:
        param.register(hp)
        if param.name in values:
            hp.values[param.name] = values[param.name]
    return hp


class ClassifierHyperModel(keras_tuner.HyperModel):
    """Shared parts: hyperparameter reading, optimizer, compile, and ``fit`` with a tuned batch size."""

    def __init__(self, space: SearchSpace, *, input_shape: tuple[int, int, int], jit_compile: bool,
                 name: str) -> None:
        super().__init__(name=name, tunable=True)
        self.space = space
        self.input_shape = check_input_shape(input_shape)
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
                                "wrap its construction in hpstudy.models.DatasetFactory")
            return model.fit(x, y, **kwargs)
        return model.fit(x, y, batch_size=batch_size, **kwargs)


def _is_batched(x: Any) -> bool:
    """True for inputs that bring their own batches (datasets, PyDatasets, generators)."""
    return isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) or hasattr(x, "__next__")

