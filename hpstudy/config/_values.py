"""Names shared by the configuration modules: families, constants, the YAML loader and value readers.

Every reader takes an ``At`` (file and key path) and raises a ``ConfigError`` that names both.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpstudy.errors import ConfigError

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
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
NUMERIC = re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------- reading YAML and values
class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float and only true/false as booleans (as YAML 1.2 does), and
    refuses duplicate keys. YAML 1.1 would read ``leak_check: off`` as false and refuse it."""


def _construct_mapping(loader: YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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


YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
YamlLoader.yaml_implicit_resolvers = {  # yes/no/on/off stay text; true/false (any case) are booleans
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?\d[\d_]*(?:\.[\d_]*)?[eE][-+]?\d+$"), list("-+0123456789"))


def read_yaml(path: Path, what: str) -> Any:
    """Parsed YAML of ``path``; a missing file or a syntax error is a ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from None
    try:
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


@dataclass(frozen=True)
class At:
    """Where a value sits: the file and the dotted key path, for error messages."""

    source: str
    key: str = ""

    def __truediv__(self, part: object) -> At:
        return At(self.source, f"{self.key}.{part}" if self.key else str(part))

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key}: {message}" if self.key else f"{self.source}: {message}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value: Any, at: At) -> float:
    """A finite float; numeric strings such as ``"1e-4"`` are accepted."""
    if isinstance(value, str) and NUMERIC.match(value.strip()):
        value = float(value.strip())
    if not is_number(value) or not math.isfinite(value):
        raise at.error(f"must be a finite number, but got {value!r}")
    return float(value)


def integer(value: Any, at: At, *, minimum: int | None = None) -> int:
    """A whole number (``3``, ``3.0`` or ``"3"``), at least ``minimum`` when given."""
    if isinstance(value, int) and not isinstance(value, bool):
        whole = value
    else:
        try:
            real = number(value, at)
        except ConfigError:
            real = math.nan
        if not real.is_integer():
            raise at.error(f"must be a whole number, but got {value!r}")
        whole = int(real)
    if minimum is not None and whole < minimum:
        raise at.error(f"must be >= {minimum}, but got {value!r}")
    return whole


def boolean(value: Any, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.error(f"must be true or false, but got {value!r}")
    return value


def one_of(value: Any, valid: Sequence[str], at: At) -> str:
    if value not in valid:
        raise at.error(f"must be one of {', '.join(valid)}, but got {value!r}")
    return str(value)


def mapping(value: Any, at: At, example: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise at.error(f"must be a mapping such as {example}, but got {value!r}")
    return value


def check_keys(data: Mapping[str, Any], valid: Sequence[str], at: At, what: str) -> None:
    """Refuse keys outside ``valid``, listing the valid ones (and a close match when there is one)."""
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise (at / key).error(f"unknown key {key!r} in {what}{hint}; valid keys: {', '.join(valid)}")


def choice_value(value: Any, at: At) -> Any:
    """A choice value: str, int, float or bool; numeric strings become numbers."""
    if isinstance(value, str) and NUMERIC.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise at.error(f"must be finite, but got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise at.error(f"choice values must be strings, numbers or booleans, but got {value!r}")
    return value


