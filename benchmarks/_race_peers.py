"""The peers of ``bench_race.py``, written as a student would: one model builder, Keras' own data loading.

    python benchmarks/_race_peers.py kt|optuna DATA SIZE SEED OUTDIR

Both use ``keras.utils.image_dataset_from_directory`` (decoded every epoch), rescaling and augmentation layers
inside the model, early stopping on val AUC (patience 5, as the shipped study) and the hyperparameters of
``search_spaces/baseline_cnn.yaml``. ``kt``: a ``keras_tuner.HyperModel`` and ``kt.Hyperband`` (max_epochs 30,
factor 3, as the shipped study) with ``tuner.search``. ``optuna``: TPE + Hyperband pruner on the same builder,
one ``fit`` per trial with a pruning callback. Every finished trial appends ``{"t", "score"}`` (seconds since
the start of this process, best val AUC of the trial) to OUTDIR/progress.jsonl. The parent kills the process
when its wall-clock budget is over.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

START = time.time()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

MAX_EPOCHS, PATIENCE = 30, 5
SPACE_FILE = Path(__file__).resolve().parents[1] / "search_spaces" / "baseline_cnn.yaml"


def read_space(path: Path = SPACE_FILE) -> dict[str, Any]:
    """The shipped space as the peers need it: a choice's values, or (low, high[, step]) of a range."""
    import yaml

    space = {}
    for name, spec in yaml.safe_load(path.read_text())["hyperparameters"].items():
        if spec["type"] == "choice":
            space[name] = list(spec["values"])
        elif spec["type"] == "bool":
            space[name] = [True, False]
        else:
            space[name] = (float(spec["low"]), float(spec["high"])) + ((float(spec["step"]),) if "step" in spec else ())
            if spec["type"] == "int":
                space[name] = tuple(int(v) for v in space[name])
    return space


SPACE = read_space()  # the ranges hpstudy searches, so the race compares tools, not spaces


def build_model(get: Any, size: int) -> keras.Model:
    """The baseline CNN; ``get(name, kind)`` returns the hyperparameter (kind: float, logfloat, int, choice)."""
    n_blocks, base, kernel = get("n_blocks", "int"), get("base_filters", "choice"), get("kernel_size", "choice")
    batchnorm, conv_dropout = get("use_batchnorm", "choice"), get("conv_dropout", "float")
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.RandomRotation(10 / 360)(x)
    x = keras.layers.RandomTranslation(0.1, 0.1)(x)
    x = keras.layers.RandomZoom(0.1)(x)
    for i in range(n_blocks):
        x = keras.layers.Conv2D(base * 2**i, kernel, padding="same", use_bias=not batchnorm)(x)
        if batchnorm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D(padding="same")(keras.layers.ReLU()(x))
        if conv_dropout > 0:
            x = keras.layers.SpatialDropout2D(conv_dropout)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    units, dropout = get("dense_units", "choice"), get("dropout", "float")
    for _ in range(get("n_dense", "int")):
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x) if dropout > 0 else x
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    lr, name = get("learning_rate", "logfloat"), get("optimizer", "choice")
    optimizer = {"adam": lambda: keras.optimizers.Adam(lr), "rmsprop": lambda: keras.optimizers.RMSprop(lr),
                 "sgd": lambda: keras.optimizers.SGD(lr, momentum=get("momentum", "float")),
                 "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=get("weight_decay", "logfloat"))}[name]()
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    return model


def load(data: Path, size: int, seed: int) -> tuple[Any, Any]:
    """Unbatched train/val datasets (batched per trial with the tuned batch size)."""
    kwargs = {"image_size": (size, size), "color_mode": "grayscale", "batch_size": None, "label_mode": "binary",
              "class_names": sorted(p.name for p in (data / "train").iterdir() if p.is_dir())[::-1]}  # covid = 1
    train = keras.utils.image_dataset_from_directory(data / "train", shuffle=True, seed=seed, **kwargs)
    val = keras.utils.image_dataset_from_directory(data / "val", shuffle=False, **kwargs)
    return train, val


def report(out: Path, score: float) -> None:
    with open(out / "progress.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"t": round(time.time() - START, 2), "score": score}) + "\n")


def stopping() -> keras.callbacks.Callback:
    return keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=PATIENCE, restore_best_weights=True)


def run_kt(data: Path, size: int, seed: int, out: Path) -> None:
    import keras_tuner as kt

    train, val = load(data, size, seed)

    class CNN(kt.HyperModel):
        def build(self, hp: Any) -> keras.Model:
            def get(name: str, kind: str) -> Any:
                spec = SPACE[name]
                if kind == "choice":
                    return hp.Choice(name, spec)
                if kind == "int":
                    return hp.Int(name, spec[0], spec[1])
                step = spec[2] if len(spec) > 2 else None
                return hp.Float(name, spec[0], spec[1], step=step, sampling="log" if kind == "logfloat" else "linear")
            return build_model(get, size)

        def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            batch = hp.Choice("batch_size", SPACE["batch_size"])
            history = model.fit(train.batch(batch).prefetch(2), validation_data=val.batch(batch), **kwargs)
            report(out, max(history.history["val_auc"]))
            return history

    tuner = kt.Hyperband(CNN(), objective=kt.Objective("val_auc", "max"), max_epochs=MAX_EPOCHS, factor=3,
                         seed=seed, directory=str(out), project_name="kt", overwrite=True)
    tuner.search(epochs=MAX_EPOCHS, callbacks=[stopping()], verbose=0)


def run_optuna(data: Path, size: int, seed: int, out: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train, val = load(data, size, seed)

    def objective(trial: Any) -> float:
        def get(name: str, kind: str) -> Any:
            spec = SPACE[name]
            if kind == "choice":
                return trial.suggest_categorical(name, spec)
            if kind == "int":
                return trial.suggest_int(name, spec[0], spec[1])
            step = spec[2] if len(spec) > 2 else None
            return trial.suggest_float(name, spec[0], spec[1], step=step, log=kind == "logfloat")

        keras.backend.clear_session()
        model, batch = build_model(get, size), trial.suggest_categorical("batch_size", SPACE["batch_size"])
        pruned = Prune(trial)
        history = model.fit(train.batch(batch).prefetch(2), validation_data=val.batch(batch), epochs=MAX_EPOCHS,
                            callbacks=[stopping(), pruned], verbose=0)
        best = max(history.history["val_auc"])
        report(out, best)
        if pruned.pruned:
            raise optuna.TrialPruned()
        return best

    class Prune(keras.callbacks.Callback):
        def __init__(self, trial: Any) -> None:
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.trial.report(float(logs["val_auc"]), epoch + 1)
            if self.trial.should_prune():
                self.pruned, self.model.stop_training = True, True

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS,
                                                                      reduction_factor=3))
    study.optimize(objective, n_trials=10_000)


if __name__ == "__main__":
    tool, data_dir, size_text, seed_text, out_dir = sys.argv[1:6]
    keras.utils.set_random_seed(int(seed_text))
    tf.get_logger().setLevel("ERROR")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    {"kt": run_kt, "optuna": run_optuna}[tool](Path(data_dir), int(size_text), int(seed_text), folder)
