"""Typed, validated search spaces and study definitions loaded from YAML.

A search space (``search_spaces/*.yaml``) names a model family and the hyperparameters it tunes in a
short form (``{type: float, low, high, log}``, ``{type: choice, values}``, ...); a study
(``studies/*.yaml``) names its data, family, search space, oracle and budget. Both become frozen
dataclasses. Every error is a ``ConfigError`` naming the file, the key path and the bad value, and
saying what was expected. Nothing here imports TensorFlow: validating a YAML file is instant.

YAML note: PyYAML reads ``1e-4`` (no dot) as a string; files are read with a loader that reads it as
a float, and numeric strings are accepted (coerced) wherever a number is expected.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hpstudy.data.settings import LEAK_SEVERITIES, NORMALIZATIONS, Augmentation
from hpstudy.errors import ConfigError

if TYPE_CHECKING:
    import keras_tuner

__all__ = [
    "FAMILY_HYPERPARAMETERS", "FAMILIES", "HP_TYPES", "OPTIMIZER_NAMES", "POOLINGS", "ORACLE_TYPES", "METRICS",
    "UNFREEZE_POLICIES", "STUDY_KEYS", "HyperParam", "SearchSpace", "load_search_space", "parse_search_space",
    "OracleConfig", "Objective", "EarlyStopping", "FinalizeConfig", "FinetuneConfig", "FeatureCacheConfig",
    "StudyConfig",
    "load_study", "parse_study", "diff_configs",
]

_HEAD = ("learning_rate", "batch_size", "optimizer", "momentum", "weight_decay", "l2")
#: The hyperparameters each model family understands (see ``hpstudy.hypermodels``).
FAMILY_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "baseline_cnn": _HEAD + ("n_blocks", "base_filters", "filters_growth", "kernel_size", "conv_dropout",
                             "use_batchnorm", "n_dense", "dense_units", "dropout", "pooling"),
    "resnet50v2_head": _HEAD + ("dense_units", "n_dense", "dropout"),
}
FAMILIES = tuple(FAMILY_HYPERPARAMETERS)
HP_TYPES = ("float", "int", "choice", "bool")
OPTIMIZER_NAMES = ("adam", "sgd", "rmsprop", "adamw")
POOLINGS = ("flatten", "global_avg")
ORACLE_TYPES = ("hyperband", "random", "bayesian")
#: Metrics every model is compiled with; objectives and early stopping watch ``val_<metric>``.
METRICS = ("loss", "accuracy", "auc", "precision", "recall")
UNFREEZE_POLICIES = ("all", "top_blocks", "from_layer")
_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
_NUMERIC = re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------- reading YAML and values
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (as YAML 1.2 does) and refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?\d[\d_]*(?:\.[\d_]*)?[eE][-+]?\d+$"), list("-+0123456789"))


def _read_yaml(path: Path, what: str) -> Any:
    """Parsed YAML of ``path``; a missing file or a syntax error is a ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


@dataclass(frozen=True)
class _At:
    """Where a value sits: the file and the dotted key path, for error messages."""

    source: str
    key: str = ""

    def __truediv__(self, part: object) -> _At:
        return _At(self.source, f"{self.key}.{part}" if self.key else str(part))

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key}: {message}" if self.key else f"{self.source}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, at: _At) -> float:
    """A finite float; numeric strings such as ``"1e-4"`` are accepted."""
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value.strip())
    if not _is_number(value) or not math.isfinite(value):
        raise at.error(f"must be a finite number, but got {value!r}")
    return float(value)


def _integer(value: Any, at: _At, *, minimum: int | None = None) -> int:
    """A whole number (``3``, ``3.0`` or ``"3"``), at least ``minimum`` when given."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        real = _number(value, at)
        if not real.is_integer():
            raise at.error(f"must be a whole number, but got {value!r}")
        number = int(real)
    if minimum is not None and number < minimum:
        raise at.error(f"must be >= {minimum}, but got {value!r}")
    return number


def _boolean(value: Any, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.error(f"must be true or false, but got {value!r}")
    return value


def _one_of(value: Any, valid: Sequence[str], at: _At) -> str:
    if value not in valid:
        raise at.error(f"must be one of {', '.join(valid)}, but got {value!r}")
    return str(value)


def _mapping(value: Any, at: _At, example: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise at.error(f"must be a mapping such as {example}, but got {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], valid: Sequence[str], at: _At, what: str) -> None:
    """Refuse keys outside ``valid``, listing the valid ones (and a close match when there is one)."""
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise (at / key).error(f"unknown key {key!r} in {what}{hint}; valid keys: {', '.join(valid)}")


def _choice_value(value: Any, at: _At) -> Any:
    """A choice value: str, int, float or bool; numeric strings become numbers."""
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise at.error(f"must be finite, but got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise at.error(f"choice values must be strings, numbers or booleans, but got {value!r}")
    return value


# --------------------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class HyperParam:
    """One tunable hyperparameter in short form; validated on construction.

    ``low``/``high``/``step``/``log`` are for float and int, ``values``/``ordered`` for choice;
    ``default`` is the value of the first trial (``low`` or the first value when not given).
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    values: tuple[Any, ...] | None = None
    default: Any = None
    ordered: bool = False

    def __post_init__(self) -> None:
        if self.values is not None and not isinstance(self.values, tuple):
            object.__setattr__(self, "values", tuple(self.values))
        if self.default is None:  # Keras Tuner's defaults, made explicit
            default = {"float": self.low, "int": self.low, "bool": False}.get(self.type)
            object.__setattr__(self, "default", self.values[0] if self.type == "choice" and self.values else default)
        problem = _param_problem(self)
        if problem:
            key, message = problem
            raise ConfigError(f"hyperparameters.{self.name}{'.' + key if key else ''}: {message}")

    def register(self, hp: keras_tuner.HyperParameters) -> Any:
        """Declare this hyperparameter on ``hp`` (range and default) and return its current value."""
        sampling = "log" if self.log else "linear"
        if self.type == "float":
            return hp.Float(self.name, min_value=self.low, max_value=self.high, step=self.step,
                            sampling=sampling, default=self.default)
        if self.type == "int":
            step = self.step if self.step is not None else (None if self.log else 1)
            return hp.Int(self.name, min_value=self.low, max_value=self.high, step=step, sampling=sampling,
                          default=self.default)
        if self.type == "choice":
            return hp.Choice(self.name, list(self.values or ()), ordered=self.ordered, default=self.default)
        return hp.Boolean(self.name, default=bool(self.default))

    @property
    def is_numeric(self) -> bool:
        """True for float/int ranges and for ordered choices of numbers."""
        if self.type in ("float", "int"):
            return True
        return self.type == "choice" and self.ordered and all(_is_number(v) for v in self.values or ())

    def to_dict(self) -> dict[str, Any]:
        """The short form again (``parse`` of it gives an equal object)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("float", "int"):
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        elif self.type == "choice":
            out["values"] = list(self.values or ())
            if self.ordered != _numeric_values(self.values or ()):
                out["ordered"] = self.ordered
        out["default"] = self.default
        return out


def _numeric_values(values: Sequence[Any]) -> bool:
    return bool(values) and all(_is_number(v) for v in values)


def _param_problem(p: HyperParam) -> tuple[str, str] | None:
    """The first violated rule of ``p`` as (key, message), or None."""
    if p.type not in HP_TYPES:
        return "type", f"must be one of {', '.join(HP_TYPES)}, but got {p.type!r}"
    if p.type in ("float", "int"):
        return _range_problem(p)
    if p.type == "choice":
        return _choice_problem(p)
    if not isinstance(p.default, bool):
        return "default", f"must be true or false, but got {p.default!r}"
    return None


def _range_problem(p: HyperParam) -> tuple[str, str] | None:
    kind = int if p.type == "int" else (int, float)
    for key in ("low", "high", "default") + (("step",) if p.step is not None else ()):
        value = getattr(p, key)
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            expected = "a whole number" if p.type == "int" else "a finite number"
            return key, f"must be {expected} for a {p.type} hyperparameter, but got {value!r}"
    if p.low > p.high:
        return "", f"`low <= high` must hold, but got low={p.low!r}, high={p.high!r}"
    if p.log and p.low <= 0:
        return "low", f"`low > 0` must hold for log sampling, but got low={p.low!r}"
    if p.step is not None and p.log:
        return "step", f"`step` cannot be combined with `log: true` (got step={p.step!r}); drop one of them"
    if p.step is not None and p.step <= 0:
        return "step", f"`step > 0` must hold, but got step={p.step!r}"
    if not p.low <= p.default <= p.high:
        return "default", (f"`low <= default <= high` must hold, but got default={p.default!r}, "
                           f"low={p.low!r}, high={p.high!r}")
    if p.step is not None:
        k = (p.default - p.low) / p.step
        if abs(k - round(k)) > 1e-6 * max(1.0, abs(k)):
            return "default", (f"must lie on the grid low + k * step ({p.low!r} + k * {p.step!r}), "
                               f"but got default={p.default!r}")
    return None


def _choice_problem(p: HyperParam) -> tuple[str, str] | None:
    values = p.values or ()
    if not values:
        return "values", "must be a non-empty list, but got []"
    types = {type(v) for v in values}
    if len(types) > 1 or not types <= {str, int, float, bool}:
        return "values", f"must all be strings, all numbers or all booleans, but got {list(values)!r}"
    duplicated = sorted({repr(v) for v in values if values.count(v) > 1})
    if duplicated:
        return "values", f"must be distinct, but {', '.join(duplicated)} appear(s) more than once in {list(values)!r}"
    if p.default not in values or type(p.default) is not type(values[0]):
        return "default", f"must be one of the values {list(values)!r}, but got {p.default!r}"
    if not isinstance(p.ordered, bool):
        return "ordered", f"must be true or false, but got {p.ordered!r}"
    if p.ordered and not _numeric_values(values):
        return "ordered", f"can be true only for numeric values, but got {list(values)!r}"
    if p.ordered and list(values) != sorted(values):
        return "values", (f"an ordered choice must list its values in increasing order (or set ordered: false), "
                          f"but got {list(values)!r}")
    return None


_RANGE_KEYS = ("type", "low", "high", "step", "log", "default")
_PARAM_KEYS = {"float": _RANGE_KEYS, "int": _RANGE_KEYS, "choice": ("type", "values", "ordered", "default"),
               "bool": ("type", "default")}


def _parse_param(name: str, spec: Any, at: _At) -> HyperParam:
    """A ``HyperParam`` from its short-form mapping; strings are coerced where numbers are expected."""
    spec = _mapping(spec, at, "{type: float, low: 0.0, high: 0.5}")
    kind = spec.get("type")
    if kind not in HP_TYPES:
        raise (at / "type").error(f"must be one of {', '.join(HP_TYPES)}, but got {kind!r}")
    _check_keys(spec, _PARAM_KEYS[kind], at, f"a {kind} hyperparameter")
    if kind == "bool":
        default = spec.get("default")
        default = False if default is None else _boolean(default, at / "default")
        return _build(at, name=name, type="bool", default=default)
    if kind == "choice":
        return _parse_choice(name, spec, at)
    read: Callable[[Any, _At], Any] = _number if kind == "float" else _integer
    for key in ("low", "high"):
        if spec.get(key) is None:
            raise (at / key).error(f"is required for a {kind} hyperparameter")
    low, high = read(spec["low"], at / "low"), read(spec["high"], at / "high")
    step = None if spec.get("step") is None else read(spec["step"], at / "step")
    default = low if spec.get("default") is None else read(spec["default"], at / "default")
    return _build(at, name=name, type=kind, low=low, high=high, step=step,
                  log=_boolean(spec.get("log", False), at / "log"), default=default)


def _build(at: _At, **settings: Any) -> HyperParam:
    """``HyperParam(**settings)`` with its validation error prefixed by the file name."""
    try:
        return HyperParam(**settings)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def _parse_choice(name: str, spec: Mapping[str, Any], at: _At) -> HyperParam:
    raw = spec.get("values")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise (at / "values").error(f"must be a non-empty list such as [16, 32, 64], but got {raw!r}")
    values = [_choice_value(v, at / "values") for v in raw]
    if all(_is_number(v) for v in values) and any(isinstance(v, float) for v in values):
        values = [float(v) for v in values]  # [0.001, 1] is a choice of floats
    default = values[0] if spec.get("default") is None else _choice_value(spec["default"], at / "default")
    if _numeric_values(values) and isinstance(values[0], float) and _is_number(default):
        default = float(default)
    ordered = spec.get("ordered")
    ordered = _numeric_values(values) if ordered is None else _boolean(ordered, at / "ordered")
    return _build(at, name=name, type="choice", values=tuple(values), default=default, ordered=ordered)


# --------------------------------------------------------------------------- what each name may take
@dataclass(frozen=True)
class _Domain:
    kind: str  # "number" | "integer" | "bool" | "name"
    test: Callable[[Any], bool] = lambda value: True
    text: str = ""


_KINDS = {"number": "numbers (type float, int or a choice of numbers)",
          "integer": "whole numbers (type int or a choice of integers)",
          "bool": "true/false (type bool or a choice of booleans)",
          "name": "names (a choice of strings)"}
_POSITIVE, _NON_NEGATIVE = _Domain("number", lambda v: v > 0, "> 0"), _Domain("number", lambda v: v >= 0, ">= 0")
_FRACTION = _Domain("number", lambda v: 0 <= v < 1, "in [0, 1)")
_DOMAINS: dict[str, _Domain] = {
    "learning_rate": _POSITIVE, "momentum": _FRACTION, "weight_decay": _NON_NEGATIVE, "l2": _NON_NEGATIVE,
    "batch_size": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "optimizer": _Domain("name", lambda v: v in OPTIMIZER_NAMES, f"one of {', '.join(OPTIMIZER_NAMES)}"),
    "n_blocks": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "base_filters": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "filters_growth": _POSITIVE,
    "kernel_size": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "conv_dropout": _FRACTION, "dropout": _FRACTION, "use_batchnorm": _Domain("bool"),
    "n_dense": _Domain("integer", lambda v: v >= 0, ">= 0"),
    "dense_units": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "pooling": _Domain("name", lambda v: v in POOLINGS, f"one of {', '.join(POOLINGS)}"),
}


def _fits_kind(p: HyperParam, kind: str) -> bool:
    values = p.values or ()
    return {
        "number": p.type in ("float", "int") or (p.type == "choice" and _numeric_values(values)),
        "integer": p.type == "int" or (p.type == "choice" and all(type(v) is int for v in values)),
        "bool": p.type == "bool" or (p.type == "choice" and all(isinstance(v, bool) for v in values)),
        "name": p.type == "choice" and all(isinstance(v, str) for v in values),
    }[kind]


def _domain_problem(p: HyperParam) -> str | None:
    """Why ``p`` cannot be used by the models (e.g. dropout >= 1, an unknown optimizer), or None."""
    domain = _DOMAINS.get(p.name)
    if domain is None:
        return None
    if not _fits_kind(p, domain.kind):
        shown = f"choice of {list(p.values or ())!r}" if p.type == "choice" else p.type
        return f"hyperparameters.{p.name}: {p.name} takes {_KINDS[domain.kind]}, but got type {shown}"
    checked = [("values", v) for v in p.values or ()] if p.type == "choice" else \
        [("low", p.low), ("high", p.high)] if p.type in ("float", "int") else []
    for key, value in checked:
        if not domain.test(value):
            return f"hyperparameters.{p.name}.{key}: {p.name} must be {domain.text}, but got {value!r}"
    return None


# --------------------------------------------------------------------------- search spaces
@dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters one model family tunes; HyperModels register only these (``value``)."""

    family: str
    params: tuple[HyperParam, ...]
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        if self.family not in FAMILY_HYPERPARAMETERS:
            raise ConfigError(f"family: unknown model family {self.family!r}; valid families: {', '.join(FAMILIES)}")
        allowed, seen = FAMILY_HYPERPARAMETERS[self.family], set()
        for p in self.params:
            if p.name not in allowed:
                raise ConfigError(f"hyperparameters.{p.name}: {p.name!r} is not a hyperparameter of family "
                                  f"{self.family!r}; valid names: {', '.join(allowed)}")
            if p.name in seen:
                raise ConfigError(f"hyperparameters.{p.name}: declared more than once")
            seen.add(p.name)
            problem = _domain_problem(p)
            if problem:
                raise ConfigError(problem)

    def __getitem__(self, name: str) -> HyperParam:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{name!r} is not in the search space; it declares {', '.join(self.names) or 'nothing'}")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def names(self) -> tuple[str, ...]:
        """Hyperparameter names in declaration order."""
        return tuple(p.name for p in self.params)

    def defaults(self) -> dict[str, Any]:
        """Name -> default value (the configuration of the first trial)."""
        return {p.name: p.default for p in self.params}

    def value(self, hp: keras_tuner.HyperParameters, name: str, fallback: Any) -> Any:
        """Register ``name`` on ``hp`` and return its value if declared, else return ``fallback``."""
        return self[name].register(hp) if name in self else fallback

    def to_dict(self) -> dict[str, Any]:
        """The YAML short form (``parse_search_space`` of it gives an equal space)."""
        return {"family": self.family, "hyperparameters": {p.name: p.to_dict() for p in self.params}}


def parse_search_space(data: Mapping[str, Any], *, source: str = "<mapping>",
                       family: str | None = None) -> SearchSpace:
    """Validate a search-space mapping (``family`` + ``hyperparameters``) into a ``SearchSpace``.

    Args:
        data: the parsed YAML.
        source: file name used in error messages.
        family: when given, the space must be written for this family.

    Raises:
        ConfigError: naming ``source``, the key path and the bad value.
    """
    at = _At(str(source))
    data = _mapping(data, at, "{family: baseline_cnn, hyperparameters: {...}}")
    _check_keys(data, ("family", "hyperparameters"), at, "a search space")
    found = data.get("family")
    if found is None:
        raise (at / "family").error(f"is required; valid families: {', '.join(FAMILIES)}")
    _one_of(found, FAMILIES, at / "family")
    if family is not None and found != family:
        raise (at / "family").error(f"this space is written for family {found!r}, but it is used for family {family!r}")
    hyperparameters = data.get("hyperparameters") or {}
    hyperparameters = _mapping(hyperparameters, at / "hyperparameters", "{learning_rate: {type: float, ...}}")
    params = [_parse_param(str(name), spec, at / "hyperparameters" / name) for name, spec in hyperparameters.items()]
    try:
        return SearchSpace(family=found, params=tuple(params),
                           source=Path(source) if source != "<mapping>" else None)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def load_search_space(path: str | Path, *, family: str | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file (see ``parse_search_space``)."""
    path = Path(path)
    data = _read_yaml(path, "search space")
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected family and hyperparameters")
    return parse_search_space(data, source=str(path), family=family)


# --------------------------------------------------------------------------- study sections
@dataclass(frozen=True)
class OracleConfig:
    """The search strategy and its budget."""

    type: str
    max_epochs: int | None = None
    factor: int = 3
    iterations: int = 1
    max_trials: int | None = None
    epochs: int | None = None
    num_initial_points: int | None = None

    @property
    def trial_epochs(self) -> int:
        """Most epochs one trial may train (hyperband: ``max_epochs``; random/bayesian: ``epochs``)."""
        return int((self.max_epochs if self.type == "hyperband" else self.epochs) or 1)

    def to_dict(self) -> dict[str, Any]:
        keys = _ORACLE_KEYS[self.type]
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


_ORACLE_KEYS = {"hyperband": ("type", "max_epochs", "factor", "iterations"),
                "random": ("type", "max_trials", "epochs"),
                "bayesian": ("type", "max_trials", "epochs", "num_initial_points")}


@dataclass(frozen=True)
class Objective:
    """The validation metric the oracle optimizes."""

    name: str = "val_auc"
    direction: str = "max"


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping of each search trial (never of the final training)."""

    monitor: str = "val_auc"
    patience: int = 5
    restore_best_weights: bool = True
    min_delta: float = 0.0

    @property
    def mode(self) -> str:
        """"max" for auc/accuracy/precision/recall/f1, "min" for losses."""
        return _metric_mode(self.monitor)


@dataclass(frozen=True)
class FinalizeConfig:
    """Retraining on train+val; ``scale_epochs`` multiplies the best epoch by the data ratio."""

    scale_epochs: bool = False


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of the ResNet50V2 backbone after the head is trained, with learning-rate back-off."""

    unfreeze: str = "all"
    top_blocks: int = 2
    from_layer: str | None = None
    learning_rate: float = 1e-5
    epochs: int = 5
    drop_margin: float = 0.1
    max_retries: int = 2


@dataclass(frozen=True)
class FeatureCacheConfig:
    """Frozen-backbone feature cache of the resnet50v2_head family (``hpstudy.features``).

    The backbone runs once per training image and view (the clean image plus ``views`` augmented
    copies) and once per validation image; the search then trains the head alone on the stored
    features, each epoch drawing one view per training image.
    """

    enabled: bool = True
    views: int = 4

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "views": self.views}


_MAX_VIEWS = 64


def _metric_mode(name: str) -> str:
    return "max" if any(part in name for part in ("auc", "acc", "precision", "recall", "f1")) else "min"


def _metric(value: Any, at: _At) -> str:
    valid = [f"val_{m}" for m in METRICS]
    if not isinstance(value, str) or not value.startswith("val_"):
        raise at.error(f"must be a validation metric (val_<metric>), because it is measured on the validation "
                       f"split, the only split the search may look at; but got {value!r}; valid: {', '.join(valid)}")
    return _one_of(value, valid, at)


def _section(value: Any, cls: type, readers: Mapping[str, Callable[[Any, _At], Any]], at: _At) -> Any:
    """A section dataclass from a mapping read key by key; missing/null means all defaults."""
    if value is None:
        return cls()
    value = _mapping(value, at, "{" + ", ".join(f"{k}: ..." for k in list(readers)[:2]) + "}")
    _check_keys(value, tuple(readers), at, at.key)
    return cls(**{k: readers[k](v, at / k) for k, v in value.items()})


def _minimum(n: int) -> Callable[[Any, _At], int]:
    return lambda value, at: _integer(value, at, minimum=n)


def _non_negative(value: Any, at: _At) -> float:
    number = _number(value, at)
    if number < 0:
        raise at.error(f"must be >= 0, but got {value!r}")
    return number


def _positive(value: Any, at: _At) -> float:
    number = _number(value, at)
    if number <= 0:
        raise at.error(f"must be > 0, but got {value!r}")
    return number


def _optional_text(value: Any, at: _At) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise at.error(f"must be a non-empty name or null, but got {value!r}")
    return str(value)


def _oracle(value: Any, at: _At) -> OracleConfig:
    value = _mapping(value, at, "{type: hyperband, max_epochs: 30, factor: 3}")
    kind = _one_of(value.get("type"), ORACLE_TYPES, at / "type")
    _check_keys(value, _ORACLE_KEYS[kind], at, f"the {kind} oracle")
    required = ("max_epochs",) if kind == "hyperband" else ("max_trials", "epochs")
    for key in required:
        if value.get(key) is None:
            raise (at / key).error(f"is required by the {kind} oracle (a whole number >= 1)")
    minimums = {"max_epochs": 1, "factor": 2, "iterations": 1, "max_trials": 1, "epochs": 1, "num_initial_points": 1}
    settings = {k: _integer(v, at / k, minimum=minimums[k]) for k, v in value.items() if k != "type" and v is not None}
    return OracleConfig(type=kind, **settings)


def _objective(value: Any, at: _At) -> Objective:
    if isinstance(value, str):
        value = {"name": value}
    if value is None:
        return Objective()
    value = _mapping(value, at, "{name: val_auc, direction: max}")
    _check_keys(value, ("name", "direction"), at, "objective")
    name = _metric(value.get("name", "val_auc"), at / "name")
    natural = _metric_mode(name)
    direction = _one_of(value.get("direction", natural), ("max", "min"), at / "direction")
    if direction != natural:
        raise (at / "direction").error(f"{name} should be {'maximized' if natural == 'max' else 'minimized'}"
                                       f" (direction: {natural}), but got direction: {direction}")
    return Objective(name=name, direction=direction)


_STOPPING = {"monitor": _metric, "patience": _minimum(0), "restore_best_weights": _boolean,
             "min_delta": _non_negative}
_FINALIZE = {"scale_epochs": _boolean}
_FINETUNE = {"unfreeze": lambda v, at: _one_of(v, UNFREEZE_POLICIES, at), "top_blocks": _minimum(1),
             "from_layer": _optional_text, "learning_rate": _positive, "epochs": _minimum(1),
             "drop_margin": _non_negative, "max_retries": _minimum(0)}


def _feature_cache(value: Any, family: str, augmentation: Augmentation, at: _At) -> FeatureCacheConfig | None:
    """The resnet50v2_head cache settings (on by default); ``true``/``false`` switch it with default views."""
    if family != "resnet50v2_head":
        if value is not None:
            raise at.error(f"applies to family resnet50v2_head only (its frozen backbone is what is cached); "
                           f"this study is {family}: remove the key")
        return None
    if isinstance(value, bool):
        return FeatureCacheConfig(enabled=value)
    config = _section(value, FeatureCacheConfig, {"enabled": _boolean, "views": _minimum(0)}, at)
    if config.views > _MAX_VIEWS:
        raise (at / "views").error(f"must be <= {_MAX_VIEWS} (each view is one backbone pass over the training "
                                   f"images), but got {config.views}")
    if config.enabled and config.views == 0 and augmentation.enabled:
        raise (at / "views").error("must be >= 1 while augmentation is on: with 0 views the head would train on "
                                   "clean features only; set augmentation: false to train without augmentation")
    return config


def _finetune(value: Any, at: _At) -> FinetuneConfig:
    config = _section(value, FinetuneConfig, _FINETUNE, at)
    if config.unfreeze == "from_layer" and not config.from_layer:
        raise (at / "from_layer").error("is required when unfreeze is from_layer (the first backbone layer "
                                        "to train, e.g. conv5_block1_preact_bn)")
    return config


def _augmentation(value: Any, at: _At) -> Augmentation:
    if value is True:
        return Augmentation()
    if isinstance(value, Mapping):
        value = {k: float(v) if isinstance(v, str) and _NUMERIC.match(v.strip()) else v for k, v in value.items()}
    try:
        return Augmentation.from_mapping(value, where=at.key)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def _image_size(value: Any, at: _At) -> tuple[int, int]:
    sides = [value, value] if not isinstance(value, (list, tuple)) else list(value)
    if len(sides) != 2:
        raise at.error(f"must be one size or [height, width], but got {value!r}")
    size = tuple(_integer(s, at) for s in sides)
    if min(size) < 32:
        raise at.error(f"sides must be >= 32 px (ResNet50V2 and the CNN's pooling need them), but got {value!r}")
    return size  # type: ignore[return-value]


def _abspath(path: str | Path, base: Path) -> Path:
    path = Path(path).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else base / path))


def _path(value: Any, at: _At, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise at.error(f"must be a path (folder or .zip) or null, but got {value!r}")
    return _abspath(value, base)


def _weights(value: Any, family: str, base: Path, at: _At) -> str:
    """``imagenet``, ``none`` or the absolute path of an existing weights file (resnet50v2_head only)."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "imagenet")):
        return "none" if value is None else value.lower()
    if not isinstance(value, (str, Path)):
        raise at.error(f"must be imagenet, none or the path of a weights file, but got {value!r}")
    if family != "resnet50v2_head":
        raise at.error(f"a weights file only applies to family resnet50v2_head (this study is {family}); "
                       f"use imagenet or none, but got {str(value)!r}")
    path = _abspath(value, base)
    if not str(path).endswith(_WEIGHT_SUFFIXES):
        raise at.error(f"a weights file must end with {', '.join(_WEIGHT_SUFFIXES)}, but got {str(path)!r}")
    if not path.is_file():
        raise at.error(f"weights file not found: {path}")
    return str(path)


def _study_space(value: Any, family: str, base: Path, at: _At) -> tuple[SearchSpace, Path | None]:
    """The study's search space: a path relative to the study file, or an inline mapping."""
    if isinstance(value, Mapping):
        return parse_search_space(value, source=f"{at.source} (search_space)", family=family), None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise at.error(f"must be the path of a search-space YAML file, but got {value!r}")
    path = _abspath(value, base)
    if not path.is_file():
        raise at.error(f"search space file not found: {path}")
    try:
        return load_search_space(path, family=family), path
    except ConfigError as exc:
        raise at.error(f"{exc}") from None


# --------------------------------------------------------------------------- studies
@dataclass(frozen=True)
class StudyConfig:
    """A resolved, validated study: everything ``hpstudy search`` needs, with absolute paths."""

    name: str
    source: Path | None
    data: Path | None
    family: str
    search_space: SearchSpace
    search_space_path: Path | None
    oracle: OracleConfig
    objective: Objective = Objective()
    early_stopping: EarlyStopping = EarlyStopping()
    seed: int = 42
    image_size: tuple[int, int] = (128, 128)
    normalization: str = "dataset"
    augmentation: Augmentation = Augmentation()
    class_weights: bool = False
    executions_per_trial: int = 1
    weights: str = "none"
    positive_class: str | None = None
    leak_check: str = "warn"
    deterministic: bool = False
    tensorboard: bool = False
    keep_checkpoints: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    trials_per_process: int = 0  # 0: every trial in the searching process; N: a fresh process every N trials
    finalize: FinalizeConfig = FinalizeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    feature_cache: FeatureCacheConfig | None = None

    @property
    def study_dir(self) -> Path:
        """The run directory: ``<folder of the YAML>/<name>`` (``studies/<name>`` without a file)."""
        return (self.source.parent if self.source else Path("studies")) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict; paths as strings; the search space inlined so a frozen copy stands alone."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "feature_cache" and value is None:
                continue  # families without a frozen backbone: keeps their frozen study.yaml unchanged
            if isinstance(value, Path):
                value = str(value)
            elif hasattr(value, "to_dict"):
                value = value.to_dict()
            elif f.name in ("objective", "early_stopping", "finalize", "finetune"):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def with_data(self, data: str | Path) -> StudyConfig:
        """A copy reading ``data`` (relative paths resolve against the current directory)."""
        return replace(self, data=_abspath(data, Path.cwd()))


STUDY_KEYS = ("name", "data", "family", "search_space", "oracle", "objective", "early_stopping", "seed",
              "image_size", "normalization", "augmentation", "class_weights", "executions_per_trial", "weights",
              "positive_class", "leak_check", "deterministic", "tensorboard", "keep_checkpoints",
              "mixed_precision", "jit_compile", "trials_per_process", "finalize", "finetune", "feature_cache")
_BOOL_KEYS = ("class_weights", "deterministic", "tensorboard", "keep_checkpoints", "mixed_precision", "jit_compile")
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "oracle": tuple(dict.fromkeys(k for keys in _ORACLE_KEYS.values() for k in keys)),
    "objective": ("name", "direction"), "early_stopping": tuple(_STOPPING), "finalize": tuple(_FINALIZE),
    "finetune": tuple(_FINETUNE), "augmentation": tuple(f.name for f in fields(Augmentation)),
    "feature_cache": ("enabled", "views"),
}


def _override_items(overrides: Sequence[str] | Mapping[str, Any], at: _At) -> list[tuple[str, Any, str]]:
    """``KEY=VALUE`` strings (values read as YAML) or a mapping, as (dotted key, value, text) triples."""
    if isinstance(overrides, Mapping):
        return [(str(k), v, f"{k}={v!r}") for k, v in overrides.items()]
    items = []
    for text in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, raw = str(text).partition("=")
        if not sep or not key.strip():
            raise at.error(f"override {text!r} must look like KEY=VALUE, e.g. oracle.max_trials=5")
        try:
            value = yaml.load(raw, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise at.error(f"override {text!r}: the value is not valid YAML ({exc})") from None
        items.append((key.strip(), value, str(text)))
    return items


def _apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any], at: _At) -> dict:
    """A copy of ``raw`` with dotted-key overrides applied; unknown keys list the valid ones."""
    result = copy.deepcopy(dict(raw))
    for key, value, text in _override_items(overrides, at):
        head, _, rest = key.partition(".")
        if head not in STUDY_KEYS:
            raise at.error(f"override {text!r}: unknown key {head!r}; valid keys: {', '.join(STUDY_KEYS)}")
        if not rest:
            result[head] = value
            continue
        valid = _SECTION_KEYS.get(head)
        if valid is None or rest not in valid:
            listed = f"valid keys in {head}: {', '.join(valid)}" if valid else f"{head} has no sub-keys"
            raise at.error(f"override {text!r}: unknown key {rest!r}; {listed}")
        section = result.get(head)
        if head == "objective" and isinstance(section, str):
            section = {"name": section}
        elif head == "feature_cache" and isinstance(section, bool):
            section = {"enabled": section}
        elif not isinstance(section, Mapping):
            section = Augmentation.none().to_dict() if head == "augmentation" and section is False else {}
        result[head] = {**section, rest: value}
    return result


def parse_study(data: Mapping[str, Any], *, source: Path | None = None, data_path: str | Path | None = None,
                overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """Validate a study mapping into a ``StudyConfig``.

    Args:
        data: the parsed YAML.
        source: the YAML file (relative paths in it resolve against its folder; else the current one).
        data_path: data folder or zip that replaces ``data`` (relative to the current directory).
        overrides: ``["oracle.max_trials=3", ...]`` or ``{"oracle.max_trials": 3}``, applied first.

    Raises:
        ConfigError: naming the file, the key path and the bad value.
    """
    at = _At(str(source) if source is not None else "<mapping>")
    raw = _apply_overrides(_mapping(data, at, "{name: ..., family: ..., search_space: ..., oracle: ...}"),
                           overrides, at)
    _check_keys(raw, STUDY_KEYS, at, "a study")
    base = Path(source).parent if source is not None else Path.cwd()
    for key in ("name", "family", "search_space", "oracle"):
        if raw.get(key) is None:
            raise (at / key).error("is required")
    name = raw["name"]
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise (at / "name").error(f"must be a safe folder name (letters, digits, _ . -), but got {name!r}")
    family = _one_of(raw["family"], FAMILIES, at / "family")
    space, space_path = _study_space(raw["search_space"], family, base, at / "search_space")
    weights = _weights(raw.get("weights", "imagenet" if family == "resnet50v2_head" else "none"), family, base,
                       at / "weights")
    pretrained = family == "resnet50v2_head" and weights != "none"
    normalization = _one_of(raw.get("normalization", "fixed" if pretrained else "dataset"), NORMALIZATIONS,
                            at / "normalization")
    if pretrained and normalization != "fixed":
        raise (at / "normalization").error(
            f"must be fixed with pretrained ResNet50V2 weights ({weights}): the backbone expects pixels scaled "
            f"as in ImageNet training, not standardized; but got {normalization!r}")
    augmentation = _augmentation(raw.get("augmentation", True), at / "augmentation")
    return StudyConfig(
        name=name, source=_abspath(source, Path.cwd()) if source is not None else None,
        data=_abspath(data_path, Path.cwd()) if data_path is not None else _path(raw.get("data"), at / "data", base),
        family=family, search_space=space, search_space_path=space_path,
        oracle=_oracle(raw["oracle"], at / "oracle"),
        objective=_objective(raw.get("objective"), at / "objective"),
        early_stopping=_section(raw.get("early_stopping"), EarlyStopping, _STOPPING, at / "early_stopping"),
        seed=_integer(raw.get("seed", 42), at / "seed", minimum=0),
        image_size=_image_size(raw.get("image_size", 224 if family == "resnet50v2_head" else 128), at / "image_size"),
        normalization=normalization,
        augmentation=augmentation,
        executions_per_trial=_integer(raw.get("executions_per_trial", 1), at / "executions_per_trial", minimum=1),
        weights=weights,
        positive_class=_optional_text(raw.get("positive_class"), at / "positive_class"),
        leak_check=_one_of(raw.get("leak_check", "warn"), LEAK_SEVERITIES, at / "leak_check"),
        finalize=_section(raw.get("finalize"), FinalizeConfig, _FINALIZE, at / "finalize"),
        finetune=_finetune(raw.get("finetune"), at / "finetune"),
        feature_cache=_feature_cache(raw.get("feature_cache"), family, augmentation, at / "feature_cache"),
        trials_per_process=_integer(raw.get("trials_per_process", 0), at / "trials_per_process", minimum=0),
        **{key: _boolean(raw.get(key, False), at / key) for key in _BOOL_KEYS},
    )


def load_study(path: str | Path, *, data: str | Path | None = None,
               overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """Read and validate a study YAML file (see ``parse_study``); ``data`` replaces the YAML's data."""
    path = Path(path)
    raw = _read_yaml(path, "study")
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; expected a study definition (name, family, ...)")
    return parse_study(raw, source=path, data_path=data, overrides=overrides)


# --------------------------------------------------------------------------- differences
def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # true != 1 here
        return type(a) is type(b) and a == b
    return _plain(a) == _plain(b)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_plain(value))


_ABSENT = object()


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per differing leaf, as ``"oracle.max_trials: 10 -> 20"`` (dotted paths, in key order).

    Keys present on one side only show ``(absent)`` on the other; lists compare as leaves.
    """
    return _diff(old, new, "")


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> list[str]:
    lines = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines.extend(_diff(a, b, f"{prefix}{key}."))
        elif a is _ABSENT or b is _ABSENT or not _same(a, b):
            left, right = ("(absent)" if v is _ABSENT else _show(v) for v in (a, b))
            lines.append(f"{prefix}{key}: {left} -> {right}")
    return lines
