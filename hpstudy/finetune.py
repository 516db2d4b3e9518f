"""Fine-tune the transfer model's backbone after its head is final, with learning-rate back-off.

The backbone (or part of it) is unfrozen, BatchNormalization layers stay frozen and in inference
mode, and the whole model trains on train+val at a low learning rate. A sudden drop of training
performance (the loss jumps, or the accuracy falls, by more than ``drop_margin``) stops the attempt;
the saved head model is reloaded and the learning rate divided by 10, up to ``max_retries`` times.
When no attempt improves on the head model, the head model is kept. Every attempt is recorded in
``finetune/lr_backoff.json``. The test split is never read here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from hpstudy._io import file_sha256
from hpstudy.errors import StudyError
from hpstudy.models import BACKBONE_NAME, FALLBACKS, compile_classifier, make_optimizer
from hpstudy.models.training import history_table, save_and_verify, write_history
from hpstudy.paths import HISTORY_FILE
from hpstudy.records import write_lr_backoff

__all__ = ["unfreeze", "DropDetector", "finetune_model"]

log = logging.getLogger("hpstudy")

_BLOCK = re.compile(r"^(conv\d+_block\d+)_")


def _backbone(model: Any) -> Any:
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError as exc:
        raise StudyError(f"model '{model.name}' has no nested backbone named '{BACKBONE_NAME}' to fine-tune") from exc


def unfreeze(model: Any, *, policy: str, top_blocks: int = 2, from_layer: str | None = None) -> list[str]:
    """Make part of the backbone trainable; BatchNormalization layers always stay frozen.

    Args:
        model: the classifier holding the backbone as a nested model.
        policy: "all", "top_blocks" (the last ``top_blocks`` residual blocks and what follows them)
            or "from_layer" (``from_layer`` and every later layer).

    Returns:
        Names of the layers made trainable.
    """
    import keras

    backbone = _backbone(model)
    layers = backbone.layers
    if policy == "all":
        start = 0
    elif policy == "top_blocks":
        blocks = list(dict.fromkeys(m.group(1) for layer in layers if (m := _BLOCK.match(layer.name))))
        if not 1 <= top_blocks <= len(blocks):
            raise StudyError(f"finetune.top_blocks must be in [1, {len(blocks)}], but got {top_blocks}")
        first = blocks[-top_blocks]
        start = next(i for i, layer in enumerate(layers) if layer.name.startswith(first + "_"))
    elif policy == "from_layer":
        names = [layer.name for layer in layers]
        if from_layer not in names:
            raise StudyError(f"finetune.from_layer '{from_layer}' is not a layer of {BACKBONE_NAME}; "
                             f"e.g. {names[-12:]}")
        start = names.index(from_layer)
    else:
        raise StudyError(f"finetune.unfreeze must be one of all, top_blocks, from_layer, but got {policy!r}")
    backbone.trainable = True
    opened = []
    for index, layer in enumerate(layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            opened.append(layer.name)
    return opened


class DropDetector:
    """Keras callback factory: stops training when the training performance suddenly drops.

    A drop is a training loss above ``(1 + margin)`` times the best loss seen so far (starting from
    the head model's final training loss), or a training accuracy more than ``margin`` below the best.
    """

    def __new__(cls, *, reference_loss: float, reference_accuracy: float | None, margin: float) -> Any:
        import keras

        class _Detector(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best_loss, self.best_accuracy = reference_loss, reference_accuracy
                self.dropped_at: int | None = None
                self.reason = ""

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                loss, accuracy = float(logs.get("loss", np.nan)), logs.get("accuracy")
                if not np.isfinite(loss) or loss > self.best_loss * (1 + margin):
                    self.reason = f"training loss {loss:.4f} > {1 + margin:.2f} x best {self.best_loss:.4f}"
                elif accuracy is not None and self.best_accuracy is not None and \
                        accuracy < self.best_accuracy - margin:
                    self.reason = (f"training accuracy {accuracy:.4f} fell below best "
                                   f"{self.best_accuracy:.4f} - {margin}")
                else:
                    self.best_loss = min(self.best_loss, loss)
                    if accuracy is not None:
                        self.best_accuracy = max(self.best_accuracy or 0.0, float(accuracy))
                    return
                self.dropped_at = epoch + 1
                self.model.stop_training = True

        return _Detector()


def _reference(final_dir: Path) -> tuple[float, float | None]:
    import pandas as pd

    history = pd.read_csv(final_dir / HISTORY_FILE)
    last = history.iloc[-1]
    return float(last["loss"]), (float(last["accuracy"]) if "accuracy" in history.columns else None)


def _attempt(config: Any, head_path: Path, dataset: Any, learning_rate: float, values: dict[str, Any],
             reference: tuple[float, float | None]) -> tuple[Any, dict[str, Any]]:
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    model = keras.models.load_model(head_path)
    settings = config.finetune
    opened = unfreeze(model, policy=settings.unfreeze, top_blocks=settings.top_blocks, from_layer=settings.from_layer)
    optimizer = make_optimizer(values.get("optimizer", FALLBACKS["optimizer"]), learning_rate,
                               momentum=values.get("momentum", FALLBACKS["momentum"]),
                               weight_decay=values.get("weight_decay", FALLBACKS["weight_decay"]))
    compile_classifier(model, optimizer=optimizer, jit_compile=config.jit_compile)
    detector = DropDetector(reference_loss=reference[0], reference_accuracy=reference[1], margin=settings.drop_margin)
    history = history_table(model.fit(dataset, epochs=settings.epochs, callbacks=[detector], verbose=0, shuffle=False))
    final_loss = float(history["loss"].iloc[-1])
    record = {
        "learning_rate": learning_rate, "epochs_run": int(len(history)), "unfrozen_layers": len(opened),
        "dropped": detector.dropped_at is not None, "dropped_at_epoch": detector.dropped_at,
        "reason": detector.reason or None, "final_loss": final_loss, "reference_loss": reference[0],
        "improved": detector.dropped_at is None and final_loss < reference[0],
        "history": history.to_dict(orient="list"),
    }
    return model, record


def finetune_model(config: Any, paths: Any, prepared: Any, x: np.ndarray, y: np.ndarray,
                   values: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the saved head model with back-off; returns the ``lr_backoff.json`` record."""
    from hpstudy.data.pipeline import make_dataset

    head_path = paths.model_file("final")
    reference = _reference(paths.final_dir)
    batch_size = int(values.get("batch_size", FALLBACKS["batch_size"]))
    dataset = make_dataset(x, y, batch_size=batch_size, normalizer=prepared.normalizer,
                           training=True, augmentation=config.augmentation, seed=config.seed)
    learning_rate, attempts = float(config.finetune.learning_rate), []
    for _ in range(config.finetune.max_retries + 1):
        log.info(f"[{config.name}] fine-tuning ({config.finetune.unfreeze}) at learning rate {learning_rate:g}")
        model, record = _attempt(config, head_path, dataset, learning_rate, values, reference)
        attempts.append(record)
        if record["improved"]:
            break
        if record["dropped"]:
            log.info(f"[{config.name}] training performance dropped ({record['reason']}); reloading the head model "
                     "and dividing the learning rate by 10")
        learning_rate /= 10
    success = attempts[-1]["improved"]
    result = {"kept": "finetuned" if success else "head", "attempts": attempts,
              "policy": config.finetune.unfreeze, "reference": {"loss": reference[0], "accuracy": reference[1]}}
    if success:
        import pandas as pd

        saved = save_and_verify(model, paths.model_file("finetune"), prepared.normalizer.apply(x[:8]))
        result.update(model=saved.name, model_sha256=file_sha256(saved))  # `evaluate` checks the file against it
        write_history(pd.DataFrame(attempts[-1]["history"]), paths.finetune_dir,
                      title=f"{config.name}: fine-tuning on train+val")
        log.info(f"[{config.name}] fine-tuned model saved to {saved}")
    else:
        log.info(f"[{config.name}] no fine-tuning attempt improved on the head model; keeping the head model "
                 f"({head_path})")
    write_lr_backoff(paths, result)
    return result
