"""The one seam with Keras Tuner's private members; every assumption here is tested against the installed version.

hpstudy uses Keras Tuner's public API everywhere else. What Keras Tuner does not expose, and hpstudy
needs, is reached here only (``tests/test_kt_compat.py`` checks each assumption):

* its JSON state writer (``keras_tuner.src.utils.save_json``), swapped for a crash-safe one;
* the oracle's retry queue and run counts (``_retry_queue``, ``_run_times``), to reconcile a reloaded
  oracle after a crash and to release the trial of a dead distributed worker;
* Hyperband's bracket arithmetic (``_get_num_brackets``, ``_get_num_rounds``, ``_get_size``,
  ``_get_epochs``) and open brackets (``_brackets``), to plan a study and keep only needed checkpoints;
* two tuner hooks (``_build_hypermodel``, ``_configure_tensorboard_dir``) and ``_is_worker``;
* Hyperband's first-round sampler (``_random_values``), to hand out given configurations first
  (``try_first``; the random and Bayesian oracles take them through the public ``populate_space``);
* the gRPC servicer, protos and client timeout of its chief/worker mode (``keras_tuner.src.distribute``).

Tested with Keras Tuner ``TESTED_RANGE``; ``pyproject.toml`` bounds the dependency to it. A version outside
the range logs a warning once instead of failing: the tests name the assumption that broke.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import keras_tuner as kt

from hpstudy._io import atomic_path

__all__ = ["TESTED_RANGE", "check_version", "make_state_writes_atomic", "TunerHooks", "is_worker",
           "retry_queue", "requeue", "reconcile_reloaded", "hyperband_rounds", "open_bracket_trials",
           "oracle_servicer", "grpc_services", "set_client_timeout", "require_grpc", "idle_trial", "try_first",
           "first_values"]

log = logging.getLogger("hpstudy")

TESTED_RANGE = ((1, 4, 7), (1, 5, 0))  # low inclusive, high exclusive
_warned = False


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_version(version: str | None = None) -> bool:
    """True when the installed Keras Tuner is in ``TESTED_RANGE``; else log one warning and return False."""
    global _warned
    installed = _version(version or kt.__version__)
    low, high = TESTED_RANGE
    if low <= installed < high:
        return True
    if not _warned:
        _warned = True
        log.warning("warning: hpstudy was tested with keras-tuner >= %s, < %s, but %s is installed; the private "
                    "members it relies on (hpstudy/_kt_compat.py) may have changed",
                    ".".join(map(str, low)), ".".join(map(str, high)), version or kt.__version__)
    return False


# --------------------------------------------------------------------------- state files
def make_state_writes_atomic() -> None:
    """Make Keras Tuner's own JSON state files (oracle.json, trial.json) crash-safe.

    Keras Tuner writes them in place; a process killed mid-write would leave a truncated file that
    stops the study from resuming. Its writer is swapped for a temp-file-and-rename one.
    """
    from keras_tuner.src import utils as kt_utils

    check_version()
    if getattr(kt_utils.save_json, "_hpstudy_atomic", False):
        return

    def save_json(path: str, obj: Any) -> str:
        import json

        text = json.dumps(obj)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return text

    save_json._hpstudy_atomic = True  # type: ignore[attr-defined]
    kt_utils.save_json = save_json


# --------------------------------------------------------------------------- tuner hooks
class TunerHooks:
    """Mixin for a Keras Tuner tuner: the private hooks hpstudy overrides.

    * Building a Hyperband continuation loads its parent's weights into a model whose optimizer is not
      built yet; Keras warns that it skips the optimizer state. That is Keras Tuner's design (the
      optimizer restarts), so the warning is silenced.
    * Keras Tuner imports tensorboard in every trial, but TensorFlow >= 2.20 no longer installs it:
      the TensorBoard set-up only runs when a TensorBoard callback was asked for.
    * With a ``trial_clock`` (``hpstudy.search.timing.TrialClock``) the model build and the checkpoint
      writes are timed (``build_s``, ``checkpoint_s``).
    * With ``defer_checkpoints`` the best epoch's weights are kept in memory and written once when the
      ``fit`` ends, instead of at every improving epoch (``BestEpochCheckpoint``).
    """

    trial_clock: Any = None
    defer_checkpoints: bool = False

    def _build_hypermodel(self, hp: Any) -> Any:
        with _measured(self.trial_clock, "build_s"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return super()._build_hypermodel(hp)  # type: ignore[misc]

    def _configure_tensorboard_dir(self, callbacks: list[Any], trial: Any, execution: int = 0) -> None:
        if any(cb.__class__.__name__ == "TensorBoard" for cb in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)  # type: ignore[misc]

    def _build_and_fit_model(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [_wrapped_checkpoint(cb, self.trial_clock, self.defer_checkpoints)
                               for cb in kwargs.get("callbacks") or []]
        return super()._build_and_fit_model(trial, *args, **kwargs)  # type: ignore[misc]


@contextmanager
def _measured(clock: Any, part: str) -> Iterator[None]:
    if clock is None:
        yield
        return
    with clock.measure(part):
        yield


def _wrapped_checkpoint(callback: Any, clock: Any, defer: bool) -> Any:
    """Keras Tuner's ``SaveBestEpoch`` of a trial wrapped once (its executions share it); others as they are."""
    from keras_tuner.src.engine import tuner_utils

    if not isinstance(callback, tuner_utils.SaveBestEpoch):
        return callback
    wrapper = getattr(callback, "_hpstudy_wrapper", None)
    if wrapper is None:
        wrapper = BestEpochCheckpoint(callback, clock=clock, defer=defer)
        callback._hpstudy_wrapper = wrapper
    return wrapper


def _saved_variables(model: Any) -> list[Any]:
    """What ``model.save_weights`` writes: the layers' variables and the optimizer's (not the metrics')."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.weights, *(optimizer.variables if optimizer is not None else [])]


class BestEpochCheckpoint(keras.callbacks.Callback):
    """Keras Tuner's ``SaveBestEpoch`` (weights at the best epoch so far, for Hyperband continuations and
    finalize), timed, and with ``defer`` written once per ``fit`` instead of at every improving epoch.

    Deferred, an improving epoch copies the variables ``save_weights`` writes into memory (milliseconds for
    the models searched here); when the ``fit`` ends those values are put back for the one write, then
    the model's own values are restored. Nobody reads the file while the trial runs (a continuation or
    finalize reads it after the trial has ended; a trial killed midway is run again from the start), and
    the file holds the same values either way.
    """

    def __init__(self, original: Any, *, clock: Any, defer: bool) -> None:
        super().__init__()
        self.original, self.clock, self.defer = original, clock, defer
        self._pending: list[Any] | None = None

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self.original.set_model(model)

    def set_params(self, params: Any) -> None:
        super().set_params(params)
        self.original.set_params(params)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        with _measured(self.clock, "checkpoint_s"):
            if not self.defer:
                self.original.on_epoch_end(epoch, logs)
            elif self._improved(logs):
                self._pending = [variable.numpy() for variable in _saved_variables(self.model)]

    def _improved(self, logs: Any) -> bool:
        objective = self.original.objective
        if not objective.has_value(logs):  # SaveBestEpoch then saves every epoch
            return True
        value = objective.get_value(logs)
        if objective.better_than(value, self.original.best_value):
            self.original.best_value = value
            return True
        return False

    def on_train_end(self, logs: Any = None) -> None:
        if self._pending is None:
            return
        with _measured(self.clock, "checkpoint_s"):
            variables = _saved_variables(self.model)
            current = [variable.numpy() for variable in variables]
            for variable, value in zip(variables, self._pending):
                variable.assign(value)
            self.original._save_model()
            for variable, value in zip(variables, current):
                variable.assign(value)
        self._pending = None


def is_worker(tuner: Any) -> bool:
    """True in a worker of Keras Tuner's chief/worker mode (it cannot see the oracle's brackets)."""
    return bool(tuner._is_worker())


# --------------------------------------------------------------------------- oracle state
def retry_queue(oracle: Any) -> list[str]:
    """A copy of the trial ids the oracle will hand out again before new ones."""
    return list(oracle._retry_queue)


def requeue(oracle: Any, trial_id: str) -> None:
    """Put a trial back in the oracle's retry queue (the next worker that asks runs it again)."""
    oracle._retry_queue.append(trial_id)


def reconcile_reloaded(oracle: Any) -> list[str]:
    """Trial ids queued for retry that had in fact ended (killed between trial.json and oracle.json).

    Each is taken out of the retry queue and recorded as ended, keeping its result. The caller saves
    the oracle.
    """
    fixed = []
    for trial_id in [t for t in oracle._retry_queue if t not in oracle.end_order]:
        if oracle.trials[trial_id].status in ("COMPLETED", "FAILED"):
            oracle._retry_queue.remove(trial_id)
            oracle.end_order.append(trial_id)
            oracle._run_times[trial_id] += 1
            fixed.append(trial_id)
    return fixed


def hyperband_rounds(oracle: Any) -> Iterator[tuple[int, int]]:
    """(trials, epochs each trains) of every round of every bracket in one Hyperband iteration."""
    for bracket in range(oracle._get_num_brackets()):
        for round_ in range(oracle._get_num_rounds(bracket)):
            previous = oracle._get_epochs(bracket, round_ - 1) if round_ else 0
            yield oracle._get_size(bracket, round_), oracle._get_epochs(bracket, round_) - previous


def open_bracket_trials(oracle: Any) -> set[str]:
    """Trial ids in Hyperband's open brackets: a later round may still load their checkpoints."""
    brackets = getattr(oracle, "_brackets", None) or []
    return {info["id"] for bracket in brackets for round_ in bracket["rounds"] for info in round_}


# --------------------------------------------------------------------------- configurations tried first
def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not all(isinstance(v, (int, float)) for v in (a, b)):
        return type(a) is type(b) and a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _holds(values: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(name in values and _same_value(values[name], value) for name, value in wanted.items())


class _FirstTrials:
    """Oracle mixin: ``first_values`` are handed out first, in order, before the oracle's own suggestions.

    Which ones are still due is counted from the trials the oracle already holds (a configuration it holds,
    whatever the trial's status, has been tried), so a resumed oracle neither repeats nor skips one.
    """

    first_values: tuple[dict[str, Any], ...] = ()

    def next_first_values(self) -> dict[str, Any] | None:
        held = [trial.hyperparameters.values for trial in self.trials.values()]  # type: ignore[attr-defined]
        for wanted in self.first_values:
            if not any(_holds(values, wanted) for values in held):
                return dict(wanted)
        return None


class _FirstInPopulate(_FirstTrials):
    """Random search and Bayesian optimization: through ``populate_space`` (their public extension point)."""

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self.next_first_values()
        if values is not None:
            return {"status": "RUNNING", "values": values}
        return super().populate_space(trial_id)  # type: ignore[misc]


class _FirstInRounds(_FirstTrials):
    """Hyperband: through the sampler of its first-round trials, so they enter a bracket like any other."""

    def _random_values(self) -> dict[str, Any] | None:
        values = self.next_first_values()
        return values if values is not None else super()._random_values()  # type: ignore[misc]


@functools.cache
def _with_first_trials(oracle_class: type) -> type:
    mixin = _FirstInRounds if issubclass(oracle_class, kt.oracles.HyperbandOracle) else _FirstInPopulate
    return type(f"{oracle_class.__name__}WithFirstTrials", (mixin, oracle_class), {})


def try_first(oracle: Any, configurations: Sequence[Mapping[str, Any]]) -> None:
    """Make ``oracle`` hand out ``configurations`` (complete hyperparameter values) first, in order.

    Keras Tuner builds the oracle inside the tuner, so the oracle's class is swapped for a subclass with
    the mixin above (its state, saved in oracle.json, is unchanged).
    """
    if not isinstance(oracle, _FirstTrials):
        oracle.__class__ = _with_first_trials(type(oracle))
    oracle.first_values = tuple(dict(values) for values in configurations)


def first_values(oracle: Any) -> list[dict[str, Any]]:
    """The configurations ``oracle`` still has to hand out first, in order."""
    if not isinstance(oracle, _FirstTrials):
        return []
    held = [trial.hyperparameters.values for trial in oracle.trials.values()]
    return [dict(w) for w in oracle.first_values if not any(_holds(values, w) for values in held)]


# --------------------------------------------------------------------------- chief/worker mode
def require_grpc() -> None:
    """Raise ImportError (with what is missing) when the gRPC stack of the chief/worker mode is absent."""
    import grpc  # noqa: F401
    from keras_tuner.src import protos

    protos.get_service_grpc()


def grpc_services() -> tuple[Any, Any]:
    """Keras Tuner's generated ``(service messages, service gRPC)`` modules."""
    from keras_tuner.src import protos

    return protos.get_service(), protos.get_service_grpc()


def idle_trial(oracle: Any) -> Any:
    """A trial with status IDLE: Keras Tuner's answer that tells a worker to ask again later."""
    from keras_tuner.src.engine import trial as trial_module

    return trial_module.Trial(oracle.get_space(), status=trial_module.TrialStatus.IDLE)


def oracle_servicer(oracle: Any, *, on_create: Callable[[Any, Any, Any], Any],
                    on_end_error: Callable[[Exception], bool]) -> Any:
    """Keras Tuner's ``OracleServicer`` with two hooks.

    ``on_create(servicer, request, trial)`` returns the trial to answer ``CreateTrial`` with (it may set
    ``servicer.stop_triggered``); ``on_end_error(exc)`` returns True when a RuntimeError from ``EndTrial``
    was kept by the caller (the answer is then an empty response instead of a failed request).
    """
    from keras_tuner.src.distribute import oracle_chief

    service, _ = grpc_services()

    class Servicer(oracle_chief.OracleServicer):  # type: ignore[misc]
        def CreateTrial(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
            trial = on_create(self, request, self.oracle.create_trial(request.tuner_id))
            return service.CreateTrialResponse(trial=trial.to_proto())

        def EndTrial(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
            try:
                return super().EndTrial(request, context)
            except RuntimeError as exc:
                if not on_end_error(exc):
                    raise
                return service.EndTrialResponse()

    return Servicer(oracle)


def set_client_timeout(seconds: float) -> None:
    """How long a worker's request may wait for the chief (Keras Tuner's default is an hour)."""
    from keras_tuner.src.distribute import oracle_client

    oracle_client.TIMEOUT = seconds
