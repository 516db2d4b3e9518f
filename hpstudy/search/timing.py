"""Where a trial's seconds go, measured in the process that runs it (issue 15: useful-work fraction).

A trial's *wall* time runs from the end of the previous trial of its process (for the first trial: from
the start of the process, or of the search call) to the end of its own bookkeeping, so the wall times of
a process's trials add up to that process's search time. Inside it the tuner measures:

* ``start_s``: before the trial starts: the process start (TensorFlow import, data check, cached images
  read, tuner reload) for the first trial of a process, the oracle's work between trials otherwise;
* ``build_s``: building and compiling the model (a Hyperband continuation also loads its parent's checkpoint);
* ``trace_s``: the first training step and the first validation step of every ``fit``, less a typical
  step (tracing the step functions);
* ``checkpoint_s``: saving the best epoch's weights;
* ``useful_s``: the seconds inside the epochs (training and validation) less ``trace_s``: the only part
  that makes the model better.

``overhead_s`` is ``wall_s - useful_s``. The study's useful-work fraction is the sum of ``useful_s`` over
the sum of ``wall_s`` (``hpstudy.trials.useful_fraction``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras

__all__ = ["PARTS", "TrialClock", "EpochTimer"]

PARTS = ("build_s", "trace_s", "epochs_s", "checkpoint_s")


class TrialClock:
    """Seconds of one trial's parts (``PARTS``), summed over its executions."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)

    def reset(self) -> None:
        self.parts = dict.fromkeys(PARTS, 0.0)

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] += max(float(seconds), 0.0)

    @contextmanager
    def measure(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - start)

    def record(self, *, wall_s: float, start_s: float) -> dict[str, float]:
        """The trial's timing record (seconds, rounded to ms); ``useful_s`` never exceeds ``wall_s``."""
        useful = min(max(self.parts["epochs_s"] - self.parts["trace_s"], 0.0), wall_s)
        values = {"wall_s": wall_s, "useful_s": useful, "overhead_s": wall_s - useful, "start_s": start_s,
                  **{name: self.parts[name] for name in ("build_s", "trace_s", "checkpoint_s")}}
        return {name: round(max(value, 0.0), 3) for name, value in values.items()}


class _FirstSteps:
    """Durations of the first two steps of one phase (training or validation) of a ``fit``."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._begin: float | None = None

    def begin(self) -> None:
        if len(self.durations) < 2:
            self._begin = time.perf_counter()

    def end(self) -> None:
        if self._begin is not None and len(self.durations) < 2:
            self.durations.append(time.perf_counter() - self._begin)
        self._begin = None

    def trace_seconds(self) -> float:
        """The first step less the second (a typical one); the whole first step when there is no second."""
        if not self.durations:
            return 0.0
        return max(self.durations[0] - (self.durations[1] if len(self.durations) > 1 else 0.0), 0.0)


class EpochTimer(keras.callbacks.Callback):
    """Adds the seconds inside the epochs and the first steps' tracing of every ``fit`` to a ``TrialClock``.

    Put it first in the callback list: its ``on_epoch_end`` then runs before early stopping and the
    checkpoint. Keras Tuner deep-copies the search's callbacks for every execution; a copy of this one is
    itself, so the measurements reach the tuner's clock.
    """

    def __init__(self, clock: TrialClock) -> None:
        super().__init__()
        self.clock = clock
        self._train, self._test = _FirstSteps(), _FirstSteps()
        self._epoch_start = 0.0

    def __deepcopy__(self, memo: dict[int, Any]) -> EpochTimer:
        return self

    def on_train_begin(self, logs: Any = None) -> None:
        self._train, self._test = _FirstSteps(), _FirstSteps()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.clock.add("epochs_s", time.perf_counter() - self._epoch_start)

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._train.begin()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._train.end()

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._test.begin()

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self._test.end()

    def on_train_end(self, logs: Any = None) -> None:
        self.clock.add("trace_s", self._train.trace_seconds() + self._test.trace_seconds())
