"""Finalize a study: retrain the best configuration on train+val, then fine-tune the transfer model.

Methodology (rule 3 of ``docs/architecture.md``): early stopping belongs to the search only. The final
model is a fresh model trained on train+val, without validation data or early stopping, for the best
epoch count recorded in the trials table (optionally scaled by the data ratio). The test split is not
read here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy._io import file_sha256
from hpstudy.config import StudyConfig, frozen_fingerprint, stage_config
from hpstudy.errors import StudyError
from hpstudy.operating import check_source, choose_operating_point
from hpstudy.paths import StudyPaths
from hpstudy.records import BestConfig, read_best_config, study_lock, write_best_config
from hpstudy.selection import choose_for_finalize, record_in_best_config
from hpstudy.trials import trial_hyperparameters

__all__ = ["FinalizeOutcome", "finalize_study", "best_hyperparameters", "final_epochs"]

log = logging.getLogger("hpstudy")


@dataclass(frozen=True)
class FinalizeOutcome:
    """What ``finalize_study`` produced."""

    model_path: Path
    epochs: int
    trial_id: str
    hyperparameters: dict[str, Any]
    finetune: dict[str, Any] | None = None


def best_hyperparameters(paths: StudyPaths, trial_id: str) -> dict[str, Any]:
    """Exact hyperparameter values of a trial, read from Keras Tuner's trial.json (types preserved).

    Raises:
        StudyError: the trial file is missing or broken.
    """
    return trial_hyperparameters(paths, trial_id)


def final_epochs(best_epoch: int, *, n_train: int, n_train_val: int, scale: bool) -> int:
    """Epochs for the final fit: the recorded best epoch, or scaled by (train+val)/train when asked.

    Scaling keeps the number of weight updates about equal when the data grows; by default the
    epoch count is kept, as the course asks.
    """
    if best_epoch < 1:
        raise StudyError(f"best epoch must be at least 1, but got {best_epoch}")
    return max(1, int(round(best_epoch * n_train_val / n_train))) if scale else int(best_epoch)


def _train_val(config: StudyConfig, paths: StudyPaths, source: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    from hpstudy.data.prepare import prepare_data

    prepared = prepare_data(source, image_size=config.image_size, normalization=config.normalization,
                            leak_check="off", cache_dir=paths.cache_dir)
    x = np.concatenate([prepared.x_train, prepared.x_val])
    y = np.concatenate([prepared.y_train, prepared.y_val])
    return prepared, x, y


def finalize_study(config: StudyConfig | str | Path, *, data: str | Path | None = None,
                   overrides: Any = (), finetune: bool | None = None) -> FinalizeOutcome:
    """Retrain the best trial's configuration on train+val and save ``final/`` (and ``finetune/``).

    It runs with the configuration the search froze (``config.stage_config``): the search's image size,
    normalization and data, whatever the study YAML says now.

    Args:
        config: a ``StudyConfig`` or study YAML path.
        data: data folder or zip; default: the one the search used (its images must be the same).
        overrides: dotted ``key=value`` settings of the later stages (e.g. ``finalize.scale_epochs=true``).
        finetune: fine-tune the backbone afterwards; default: yes for the transfer family.

    Raises:
        StudyError: the study has no search or no completed trial yet, other data than the search's, an
            override that differs from the search, or another process using the study.
    """
    from hpstudy.runtime import quiet_tensorflow

    quiet_tensorflow()
    config = stage_config(config, stage="finalize", data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    with study_lock(paths, command="finalize"):
        return _finalize(config, paths, finetune, overrides)


def _finalize(config: StudyConfig, paths: StudyPaths, finetune: bool | None, overrides: Any = ()) -> FinalizeOutcome:
    from hpstudy.data.discover import resolve_source
    from hpstudy.runtime import configure_devices, seed_everything

    choice = choose_for_finalize(config, paths, overrides=overrides)  # re-evaluates first when selection asks
    best = choice.best
    trial_id = str(best["trial_id"])
    values = best_hyperparameters(paths, trial_id)
    source = resolve_source(config.data, positive_class=config.positive_class,
                            expected_fingerprint=frozen_fingerprint(config))
    seed_everything(config.seed, deterministic=config.deterministic)
    configure_devices(mixed_precision=config.mixed_precision)
    prepared, x, y = _train_val(config, paths, source)
    epochs = final_epochs(int(best["best_epoch"]), n_train=len(prepared.y_train), n_train_val=len(y),
                          scale=config.finalize.scale_epochs)
    log.info(f"[{config.name}] finalizing trial {trial_id} ({choice.score_text}): "
             f"{epochs} epochs on train+val ({len(y)} images), no early stopping, no validation data"
             + (f" ({choice.epochs_from}, {int(best['best_epoch'])}, scaled by {len(y)}/{len(prepared.y_train)})"
                if config.finalize.scale_epochs else f" ({choice.epochs_from})"))
    check_source(config, paths, trial_id)  # a threshold policy that cannot be served fails before training
    model_path = _saved_final(paths, trial_id=trial_id, epochs=epochs, hyperparameters=values, family=config.family)
    if model_path is not None:  # a rerun (e.g. after a crash while fine-tuning) keeps the model it saved
        log.info(f"[{config.name}] final model of trial {trial_id} already saved at {model_path} "
                 "(its SHA-256 matches best_config.json); keeping it")
    else:
        model_path = _train_and_save(config, paths, prepared, best, values, x, y, epochs)
    record_in_best_config(paths, choice.record)
    choose_operating_point(config, paths, prepared, trial_id, values)  # on validation predictions of train-only models
    outcome = FinalizeOutcome(model_path, epochs, trial_id, values)
    if finetune if finetune is not None else config.family == "resnet50v2_head":
        from hpstudy.finetune import finetune_model

        record = finetune_model(config, paths, prepared, x, y, values)
        outcome = FinalizeOutcome(model_path, epochs, trial_id, values, record)
    return outcome


def _train_and_save(config: StudyConfig, paths: StudyPaths, prepared: Any, best: Any, values: dict[str, Any],
                    x: np.ndarray, y: np.ndarray, epochs: int) -> Path:
    """Fit the final model, save it (reloaded and checked), and record it in ``best_config.json``."""
    from hpstudy.models.training import save_and_verify, write_history

    model, history = _fit_final(config, prepared, values, x, y, epochs)
    model_path = save_and_verify(model, paths.model_file("final"), prepared.normalizer.apply(x[:8]))
    write_history(history, paths.final_dir, title=f"{config.name}: final training on train+val")
    write_best_config(paths, BestConfig(
        trial_id=str(best["trial_id"]), score=float(best["score"]), objective=config.objective.name,
        hyperparameters=values, best_epoch=int(best["best_epoch"]), epochs=epochs,
        scaled_by_data_ratio=config.finalize.scale_epochs, train_val_images=int(len(y)),
        normalizer=prepared.normalizer.to_dict(), normalizer_fitted_on="train",
        model=model_path.name, model_sha256=file_sha256(model_path), family=config.family))
    log.info(f"[{config.name}] final model saved to {model_path} (reloaded and checked)")
    return model_path


def _saved_final(paths: StudyPaths, **expected: Any) -> Path | None:
    """``final/model.keras`` when ``best_config.json`` records ``expected`` and the file's SHA-256, else None."""
    path, record = paths.model_file("final"), read_best_config(paths)
    if record is None or not path.is_file():
        return None
    if any(getattr(record, key) != value for key, value in expected.items()):
        return None
    return path if file_sha256(path) == record.model_sha256 else None


def _fit_final(config: StudyConfig, prepared: Any, values: dict[str, Any], x: np.ndarray, y: np.ndarray,
               epochs: int) -> tuple[Any, Any]:
    import keras

    from hpstudy.data.pipeline import class_weights, make_dataset
    from hpstudy.features import uses_feature_cache
    from hpstudy.models import FALLBACKS, build_hypermodel, hyperparameters_object
    from hpstudy.models.training import history_table

    if uses_feature_cache(config):  # the head trains on cached features, then moves onto the backbone
        return _fit_final_head(config, prepared, values, epochs, StudyPaths(config.study_dir).cache_dir)
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    hypermodel = build_hypermodel(config.family, config.search_space, input_shape=prepared.input_shape,
                                  weights=config.weights, jit_compile=config.jit_compile)
    hp = hyperparameters_object(config.search_space, values)
    model = hypermodel.build(hp)
    batch_size = int(values.get("batch_size", FALLBACKS["batch_size"]))
    dataset = make_dataset(x, y, batch_size=batch_size, normalizer=prepared.normalizer, training=True,
                           augmentation=config.augmentation, seed=config.seed)
    kwargs = {"class_weight": class_weights(y)} if config.class_weights else {}
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, **kwargs)  # the pipeline shuffles
    return model, history_table(history)


def _fit_final_head(config: StudyConfig, prepared: Any, values: Mapping[str, Any], epochs: int,
                    cache_dir: Path) -> tuple[Any, Any]:
    """Train the head on cached train+val features (clean and augmented views of both), then transplant it.

    The head trains for ``epochs`` without validation data, drawing one view per image per epoch as
    in the search; the full model is then built on the same backbone weights as the features and the
    head's weights are copied into it (``copy_head_weights``).

    Returns:
        ``(full model, history table)``.
    """
    import keras

    from hpstudy import features
    from hpstudy.data.pipeline import class_weights
    from hpstudy.models import FALLBACKS, copy_head_weights, head_on_features, hyperparameters_object
    from hpstudy.models.training import history_table

    views = features.feature_views(config)
    cache = features.study_feature_cache(config, prepared, cache_dir)
    parts = [features.split_features(cache, prepared, split, views) for split in ("train", "val")]
    cache.release()
    both = features.FeatureSet(np.concatenate([p.features for p in parts], axis=1),
                               np.concatenate([p.labels for p in parts]))
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    hypermodel = head_on_features(config.search_space, prepared.input_shape, cache.backbone.source,
                                  config.jit_compile, both.dim)
    hp = hyperparameters_object(config.search_space, dict(values))
    head = hypermodel.build(hp)
    batch_size = int(values.get("batch_size", FALLBACKS["batch_size"]))
    dataset = features.feature_dataset(both, batch_size=batch_size, training=True, seed=config.seed)
    kwargs = {"class_weight": class_weights(both.labels)} if config.class_weights else {}
    history = head.fit(dataset, epochs=epochs, verbose=0, shuffle=False, **kwargs)  # the dataset shuffles
    model = hypermodel.build_full(hp)
    copy_head_weights(head, model)
    model.optimizer.build(model.trainable_variables)  # saved with its slots, so reloading finds them all
    log.info(f"[{config.name}] head trained on cached features ({len(both)} images x {both.views} view(s)) and "
             f"transplanted onto the backbone ({cache.backbone.identity[:40]})")
    return model, history_table(history)
