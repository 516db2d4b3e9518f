"""Hyperparameters and search spaces: ``search_spaces/*.yaml`` into a validated ``SearchSpace``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpstudy.config._values import (
    FAMILIES,
    FAMILY_HYPERPARAMETERS,
    HP_TYPES,
    At,
    boolean,
    check_keys,
    choice_value,
    integer,
    is_number,
    mapping,
    number,
    one_of,
    read_yaml,
)
from hpstudy.config.domains import domain_problem, hard_limits
from hpstudy.config.ranges import Limits, LinearRange, LogRange, OrderedValues, Range
from hpstudy.errors import ConfigError

if TYPE_CHECKING:
    import keras_tuner


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
    def range(self) -> Range | None:
        """The numeric range of a float, int or ordered numeric choice (None for other types)."""
        if self.type in ("float", "int"):
            integer = self.type == "int"
            if self.log:
                return LogRange(self.low, self.high, integer=integer)
            return LinearRange(self.low, self.high, step=self.step, integer=integer)
        if self.is_numeric and len(self.values or ()) >= 2:
            return OrderedValues(tuple(self.values or ()))
        return None

    def contains(self, value: Any) -> bool:
        """True when ``value`` is one this hyperparameter can take (range, grid, choice and type)."""
        if self.type == "bool":
            return isinstance(value, bool)
        if self.range is not None:
            return self.range.contains(value)
        return any(type(v) is type(value) and v == value for v in self.values or ())

    def cast(self, value: Any) -> Any:
        """``value`` in this hyperparameter's own type (3.0 -> 3 for an int).

        Raises:
            ValueError: ``value`` is not one this hyperparameter can take (the message says what it can).
        """
        if hasattr(value, "item") and callable(value.item):  # a NumPy scalar, e.g. read from a trials table
            value = value.item()
        if self.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif self.type == "float" and is_number(value):
            value = float(value)
        elif self.type == "choice" and is_number(value):
            matches = [v for v in self.values or () if is_number(v) and math.isclose(v, value, rel_tol=1e-9)]
            value = matches[0] if matches else value
        if not self.contains(value):
            raise ValueError(f"{value!r} lies outside this study's space ({self.name}: {self.describe()})")
        return value

    def extended(self, side: str, limits: Limits | None = None) -> HyperParam | None:
        """A copy with the ``side`` end widened (see ``config.ranges``), or None when it cannot move."""
        changes = self.range.extended(side, limits or Limits()) if self.range is not None else None
        return None if changes is None else replace(self, **changes)

    def describe(self) -> str:
        """The range in words, e.g. ``int 2..5``, ``float 1e-05..0.01 log``, ``choice [16, 32, 64]``."""
        if self.type in ("float", "int"):
            grid = f" step {self.step:g}" if self.step is not None else ""
            return f"{self.type} {self.low:g}..{self.high:g}{grid}{' log' if self.log else ''}"
        if self.type == "choice":
            return f"choice {list(self.values or ())}"
        return "bool"

    @property
    def is_numeric(self) -> bool:
        """True for float/int ranges and for ordered choices of numbers."""
        if self.type in ("float", "int"):
            return True
        return self.type == "choice" and self.ordered and all(is_number(v) for v in self.values or ())

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
    return bool(values) and all(is_number(v) for v in values)


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


def _parse_param(name: str, spec: Any, at: At) -> HyperParam:
    """A ``HyperParam`` from its short-form mapping; strings are coerced where numbers are expected."""
    spec = mapping(spec, at, "{type: float, low: 0.0, high: 0.5}")
    kind = spec.get("type")
    if kind not in HP_TYPES:
        raise (at / "type").error(f"must be one of {', '.join(HP_TYPES)}, but got {kind!r}")
    check_keys(spec, _PARAM_KEYS[kind], at, f"a {kind} hyperparameter")
    if kind == "bool":
        default = spec.get("default")
        default = False if default is None else boolean(default, at / "default")
        return _build(at, name=name, type="bool", default=default)
    if kind == "choice":
        return _parse_choice(name, spec, at)
    read: Callable[[Any, At], Any] = number if kind == "float" else integer
    for key in ("low", "high"):
        if spec.get(key) is None:
            raise (at / key).error(f"is required for a {kind} hyperparameter")
    low, high = read(spec["low"], at / "low"), read(spec["high"], at / "high")
    step = None if spec.get("step") is None else read(spec["step"], at / "step")
    default = low if spec.get("default") is None else read(spec["default"], at / "default")
    return _build(at, name=name, type=kind, low=low, high=high, step=step,
                  log=boolean(spec.get("log", False), at / "log"), default=default)


def _build(at: At, **settings: Any) -> HyperParam:
    """``HyperParam(**settings)`` with its validation error prefixed by the file name."""
    try:
        return HyperParam(**settings)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def _parse_choice(name: str, spec: Mapping[str, Any], at: At) -> HyperParam:
    raw = spec.get("values")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise (at / "values").error(f"must be a non-empty list such as [16, 32, 64], but got {raw!r}")
    values = [choice_value(v, at / "values") for v in raw]
    if all(is_number(v) for v in values) and any(isinstance(v, float) for v in values):
        values = [float(v) for v in values]  # [0.001, 1] is a choice of floats
    default = values[0] if spec.get("default") is None else choice_value(spec["default"], at / "default")
    if _numeric_values(values) and isinstance(values[0], float) and is_number(default):
        default = float(default)
    ordered = spec.get("ordered")
    ordered = _numeric_values(values) if ordered is None else boolean(ordered, at / "ordered")
    return _build(at, name=name, type="choice", values=tuple(values), default=default, ordered=ordered)


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
            problem = domain_problem(p)
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

    def extended(self, name: str, side: str, *, image_size: Sequence[int] | None = None) -> HyperParam | None:
        """``name`` with its ``side`` end widened within the family's ``HARD_LIMITS`` (None: it cannot move);
        ``image_size`` caps ``n_blocks`` (``config.hard_limits``)."""
        return self[name].extended(side, hard_limits(self.family, name, image_size=image_size))

    def with_param(self, param: HyperParam) -> SearchSpace:
        """A copy with ``param`` replacing the hyperparameter of the same name (validated again)."""
        self[param.name]  # noqa: B018 - raises KeyError for an unknown name
        return SearchSpace(self.family, tuple(param if p.name == param.name else p for p in self.params), self.source)

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
    at = At(str(source))
    data = mapping(data, at, "{family: baseline_cnn, hyperparameters: {...}}")
    check_keys(data, ("family", "hyperparameters"), at, "a search space")
    found = data.get("family")
    if found is None:
        raise (at / "family").error(f"is required; valid families: {', '.join(FAMILIES)}")
    one_of(found, FAMILIES, at / "family")
    if family is not None and found != family:
        raise (at / "family").error(f"this space is written for family {found!r}, but it is used for family {family!r}")
    hyperparameters = data.get("hyperparameters") or {}
    hyperparameters = mapping(hyperparameters, at / "hyperparameters", "{learning_rate: {type: float, ...}}")
    params = [_parse_param(str(name), spec, at / "hyperparameters" / name) for name, spec in hyperparameters.items()]
    try:
        return SearchSpace(family=found, params=tuple(params),
                           source=Path(source) if source != "<mapping>" else None)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def load_search_space(path: str | Path, *, family: str | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file (see ``parse_search_space``)."""
    path = Path(path)
    data = read_yaml(path, "search space")
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected family and hyperparameters")
    return parse_search_space(data, source=str(path), family=family)


