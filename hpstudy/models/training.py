"""Training helpers every stage shares: epoch histories, their CSV and curves, and verified model saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path
from hpstudy.errors import StudyError
from hpstudy.paths import CURVES_FILE, HISTORY_FILE

__all__ = ["history_frame", "history_table", "write_history", "plot_history", "save_and_verify"]


def history_frame(histories: list[Any]) -> pd.DataFrame:
    """Per-epoch metrics averaged over executions; ``epoch`` is 1-based and absolute.

    For a Hyperband continuation the epochs continue from the parent trial's, so the best epoch
    is the total number of epochs the model had been trained for.
    """
    frames = []
    for history in histories:
        if not hasattr(history, "history") or not history.history:
            continue
        frame = pd.DataFrame(history.history)
        frame.insert(0, "epoch", [e + 1 for e in history.epoch])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["epoch"])
    return pd.concat(frames).groupby("epoch", as_index=False).mean()


def history_table(history: Any) -> pd.DataFrame:
    """A Keras ``History`` as a DataFrame with a 1-based ``epoch`` column (the search's own conversion)."""
    return history_frame([history])


def plot_history(history: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Training curves (loss and every metric) of a fit without validation data."""
    from matplotlib.figure import Figure

    metrics = [name for name in history.columns if name != "epoch"]
    fig = Figure(figsize=(4 * max(len(metrics), 1), 4))
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)
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
    return path


def write_history(history: pd.DataFrame, folder: Path, *, title: str) -> None:
    """Write ``history.csv`` and ``curves.png`` into ``folder`` (atomically)."""
    with atomic_path(folder / HISTORY_FILE) as tmp:
        history.to_csv(tmp, index=False)
    plot_history(history, folder / CURVES_FILE, title=title)


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
