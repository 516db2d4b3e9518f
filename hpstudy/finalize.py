"""Finalize a study: retrain the best configuration on train+val, then fine-tune the transfer model.

Methodology (DESIGN.md, rule 3): early stopping belongs to the search only. The final model is a
fresh model trained on train+val, without validation data or early stopping, for the best epoch
count recorded in the trials table (optionally scaled by the data ratio). The test split is not
read here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy._io import atomic_path, atomic_write_json
from hpstudy.config import StudyConfig
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.trials import best_trial, load_trials

__all__ = ["FinalizeOutcome", "finalize_study", "best_hyperparameters", "final_epochs", "file_sha256",
           "save_and_verify", "plot_history", "write_history", "history_table"]


@dataclass(frozen=True)
class FinalizeOutcome:
    """What ``finalize_study`` produced."""

    model_path: Path
    epochs: int
    trial_id: str
    hyperparameters: dict[str, Any]
    finetune: dict[str, Any] | None = None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks (model files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def best_hyperparameters(paths: StudyPaths, trial_id: str) -> dict[str, Any]:
    """Exact hyperparameter values of a trial, read from Keras Tuner's trial.json (types preserved)."""
    trial_json = paths.trial_dir(trial_id) / "trial.json"
    try:
        values = json.loads(trial_json.read_text(encoding="utf-8"))["hyperparameters"]["values"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise StudyError(f"cannot read the hyperparameters of trial {trial_id} from {trial_json}: {exc}") from exc
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def final_epochs(best_epoch: int, *, n_train: int, n_train_val: int, scale: bool) -> int:
    """Epochs for the final fit: the recorded best epoch, or scaled by (train+val)/train when asked.

    Scaling keeps the number of weight updates about equal when the data grows; by default the
    epoch count is kept, as the course asks.
    """
    if best_epoch < 1:
        raise StudyError(f"best epoch must be at least 1, but got {best_epoch}")
    return max(1, int(round(best_epoch * n_train_val / n_train))) if scale else int(best_epoch)


def hyperparameters_object(space: Any, values: dict[str, Any]) -> Any:
    """A ``keras_tuner.HyperParameters`` holding exactly ``values`` for the space's parameters."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for param in space.params:
        param.register(hp)
        if param.name in values:
            hp.values[param.name] = values[param.name]
    return hp


def save_and_verify(model: Any, path: Path, probe: np.ndarray, *, atol: float = 1e-5) -> Path:
    """Save a model atomically, reload it, and check the reloaded predictions match.

    Raises:
        StudyError: when the reloaded model predicts differently (the file would not be trustworthy).
    """
    import keras

    with atomic_path(path) as tmp:
        model.save(tmp)
        reloaded = keras.models.load_model(tmp)
        expected = model.predict(probe, verbose=0)
        got = reloaded.predict(probe, verbose=0)
        if not np.allclose(expected, got, atol=atol):
            raise StudyError(f"the model saved to {path} predicts differently after reloading "
                             f"(max difference {np.abs(expected - got).max():.2e}); nothing was saved")
    return path


def plot_history(history: Any, path: Path, *, title: str) -> Path:
    """Training curves (loss and every metric) of a fit without validation data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [name for name in history.columns if name != "epoch"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        ax.plot(history["epoch"], history[name], marker="o", label=f"train+val {name}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _train_val(config: StudyConfig, paths: StudyPaths) -> tuple[Any, np.ndarray, np.ndarray]:
    from hpstudy.data.prepare import prepare_data, resolve_source

    source = resolve_source(config.data, positive_class=config.positive_class)
    prepared = prepare_data(source, image_size=config.image_size, normalization=config.normalization,
                            leak_check="off", cache_dir=paths.cache_dir)
    x = np.concatenate([prepared.x_train, prepared.x_val])
    y = np.concatenate([prepared.y_train, prepared.y_val])
    return prepared, x, y


def finalize_study(config: StudyConfig | str | Path, *, data: str | Path | None = None,
                   overrides: Any = (), finetune: bool | None = None) -> FinalizeOutcome:
    """Retrain the best trial's configuration on train+val and save ``final/`` (and ``finetune/``).

    Args:
        config: a ``StudyConfig`` or study YAML path.
        data: data folder or zip (overrides the YAML's ``data``).
        overrides: dotted ``key=value`` settings.
        finetune: fine-tune the backbone afterwards; default: yes for the transfer family.

    Raises:
        StudyError: when the study has no completed trial yet.
    """
    from hpstudy.runtime import configure_devices, quiet_tensorflow, seed_everything
    from hpstudy.study import resolve_config

    quiet_tensorflow()
    config = resolve_config(config, data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    best = best_trial(load_trials(paths.root), direction=config.objective.direction)
    values = best_hyperparameters(paths, str(best["trial_id"]))
    seed_everything(config.seed, deterministic=config.deterministic)
    configure_devices(mixed_precision=config.mixed_precision)
    prepared, x, y = _train_val(config, paths)
    epochs = final_epochs(int(best["best_epoch"]), n_train=len(prepared.y_train), n_train_val=len(y),
                          scale=config.finalize.scale_epochs)
    print(f"[{config.name}] finalizing trial {best['trial_id']} ({config.objective.name}={best['score']:.4f}): "
          f"{epochs} epochs on train+val ({len(y)} images), no early stopping, no validation data"
          + (f" (best epoch {int(best['best_epoch'])} scaled by {len(y)}/{len(prepared.y_train)})"
             if config.finalize.scale_epochs else " (the best epoch of the search)"))
    model_path = _saved_final(paths, trial_id=str(best["trial_id"]), epochs=epochs, hyperparameters=values,
                              family=config.family)
    if model_path is not None:  # a rerun (e.g. after a crash while fine-tuning) keeps the model it saved
        print(f"[{config.name}] final model of trial {best['trial_id']} already saved at {model_path} "
              "(its SHA-256 matches best_config.json); keeping it")
    else:
        model, history = _fit_final(config, prepared, values, x, y, epochs)
        model_path = save_and_verify(model, paths.final_dir / "model.keras", prepared.normalizer.apply(x[:8]))
        write_history(history, paths.final_dir, title=f"{config.name}: final training on train+val")
        atomic_write_json(paths.final_dir / "best_config.json", {
            "trial_id": str(best["trial_id"]), "score": float(best["score"]), "objective": config.objective.name,
            "hyperparameters": values, "best_epoch": int(best["best_epoch"]), "epochs": epochs,
            "scaled_by_data_ratio": config.finalize.scale_epochs, "train_val_images": int(len(y)),
            "normalizer": prepared.normalizer.to_dict(), "normalizer_fitted_on": "train",
            "model": model_path.name, "model_sha256": file_sha256(model_path), "family": config.family,
        })
        print(f"[{config.name}] final model saved to {model_path} (reloaded and checked)")
    outcome = FinalizeOutcome(model_path, epochs, str(best["trial_id"]), values)
    if finetune if finetune is not None else config.family == "resnet50v2_head":
        from hpstudy.finetune import finetune_model

        record = finetune_model(config, paths, prepared, x, y, values)
        outcome = FinalizeOutcome(model_path, epochs, str(best["trial_id"]), values, record)
    return outcome


def _saved_final(paths: StudyPaths, **expected: Any) -> Path | None:
    """``final/model.keras`` when ``best_config.json`` records ``expected`` and the file's SHA-256, else None."""
    path = paths.final_dir / "model.keras"
    try:
        record = json.loads((paths.final_dir / "best_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if any(record.get(key) != value for key, value in expected.items()) or not path.is_file():
        return None
    return path if file_sha256(path) == record.get("model_sha256") else None


def _fit_final(config: StudyConfig, prepared: Any, values: dict[str, Any], x: np.ndarray, y: np.ndarray,
               epochs: int) -> tuple[Any, Any]:
    import keras

    from hpstudy.data.pipeline import class_weights, make_dataset
    from hpstudy.features import fit_final_head, uses_feature_cache
    from hpstudy.hypermodels import build_hypermodel

    if uses_feature_cache(config):  # the head trains on cached features, then moves onto the backbone
        return fit_final_head(config, prepared, values, epochs, StudyPaths(config.study_dir).cache_dir)
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    hypermodel = build_hypermodel(config.family, config.search_space, input_shape=prepared.input_shape,
                                  weights=config.weights, jit_compile=config.jit_compile)
    hp = hyperparameters_object(config.search_space, values)
    model = hypermodel.build(hp)
    batch_size = int(values.get("batch_size", 32))
    dataset = make_dataset(x, y, batch_size=batch_size, normalizer=prepared.normalizer, training=True,
                           augmentation=config.augmentation, seed=config.seed)
    kwargs = {"class_weight": class_weights(y)} if config.class_weights else {}
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, **kwargs)  # the pipeline shuffles
    return model, history_table(history)


def history_table(history: Any) -> Any:
    """A Keras ``History`` as a DataFrame with a 1-based ``epoch`` column (the search's own conversion)."""
    from hpstudy.tuners import history_frame

    return history_frame([history])


def write_history(history: Any, folder: Path, *, title: str) -> None:
    """Write ``history.csv`` and ``curves.png`` into ``folder`` (atomically)."""
    with atomic_path(folder / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    plot_history(history, folder / "curves.png", title=title)
