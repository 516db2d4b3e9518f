"""The sections of a study definition (oracle, objective, early stopping, finalize, fine-tune, feature
cache) and the readers of its single values (image size, weights, paths).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpstudy.config._values import (
    METRICS,
    NUMERIC,
    ORACLE_TYPES,
    UNFREEZE_POLICIES,
    WEIGHT_SUFFIXES,
    At,
    boolean,
    check_keys,
    integer,
    is_number,
    mapping,
    number,
    one_of,
)
from hpstudy.config.settings import Augmentation
from hpstudy.config.space import (
    SearchSpace,
    load_search_space,
    parse_search_space,
)
from hpstudy.errors import ConfigError


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
        keys = ORACLE_KEYS[self.type]
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


ORACLE_KEYS = {"hyperband": ("type", "max_epochs", "factor", "iterations"),
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


@dataclass(frozen=True)
class SelectionConfig:
    """Top-k re-evaluation before a winner is picked (``hpstudy confirm``, ``hpstudy.selection``).

    The ``top_k`` best completed trials are each trained again ``seeds`` times with new seeds on train,
    validated on val; the winner is the best mean. The default (1, 1) keeps the search's best trial as
    found, retraining nothing.
    """

    top_k: int = 1
    seeds: int = 1

    @property
    def is_default(self) -> bool:
        """True for ``top_k: 1, seeds: 1``: nothing is re-evaluated."""
        return self.top_k == 1 and self.seeds == 1

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "seeds": self.seeds}


BUDGET_KINDS = {"epochs": "epochs_run", "seconds": "seconds"}  # budget kind -> the trials-table column it sums


@dataclass(frozen=True)
class SearchBudget:
    """Stop asking the oracle for trials once the trials have spent ``amount`` epochs or seconds.

    Set by a repeated oracle comparison (``hpstudy compare``) so every repeat gets the same budget; the
    trial running when the budget runs out finishes. Spent = the sum of the trials' ``epochs_run`` (epochs
    trained) or ``seconds`` (training time) in the trials table.
    """

    kind: str
    amount: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(f"budget: the kind must be one of {', '.join(BUDGET_KINDS)}, but got {self.kind!r}")
        if not isinstance(self.amount, (int, float)) or isinstance(self.amount, bool) or not self.amount > 0 \
                or self.amount == float("inf"):
            raise ConfigError(f"budget: {self.kind} must be a finite number > 0, but got {self.amount!r}")

    @property
    def column(self) -> str:
        """The trials-table column the budget sums: ``epochs_run`` or ``seconds``."""
        return BUDGET_KINDS[self.kind]

    def describe(self) -> str:
        """E.g. ``"20 epochs"`` or ``"600 seconds"``."""
        return f"{self.amount:g} {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.amount}


_MAX_VIEWS = 64


def _metric_mode(name: str) -> str:
    return "max" if any(part in name for part in ("auc", "acc", "precision", "recall", "f1")) else "min"


def _metric(value: Any, at: At) -> str:
    valid = [f"val_{m}" for m in METRICS]
    if not isinstance(value, str) or not value.startswith("val_"):
        raise at.error(f"must be a validation metric (val_<metric>), because it is measured on the validation "
                       f"split, the only split the search may look at; but got {value!r}; valid: {', '.join(valid)}")
    return one_of(value, valid, at)


def read_section(value: Any, cls: type, readers: Mapping[str, Callable[[Any, At], Any]], at: At) -> Any:
    """A section dataclass from a mapping read key by key; missing/null means all defaults."""
    if value is None:
        return cls()
    value = mapping(value, at, "{" + ", ".join(f"{k}: ..." for k in list(readers)[:2]) + "}")
    check_keys(value, tuple(readers), at, at.key)
    return cls(**{k: readers[k](v, at / k) for k, v in value.items()})


def _minimum(n: int) -> Callable[[Any, At], int]:
    return lambda value, at: integer(value, at, minimum=n)


def _non_negative(value: Any, at: At) -> float:
    result = number(value, at)
    if result < 0:
        raise at.error(f"must be >= 0, but got {value!r}")
    return result


def _positive(value: Any, at: At) -> float:
    result = number(value, at)
    if result <= 0:
        raise at.error(f"must be > 0, but got {value!r}")
    return result


def optional_text(value: Any, at: At) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise at.error(f"must be a non-empty name or null, but got {value!r}")
    return str(value)


def read_oracle(value: Any, at: At) -> OracleConfig:
    value = mapping(value, at, "{type: hyperband, max_epochs: 30, factor: 3}")
    kind = one_of(value.get("type"), ORACLE_TYPES, at / "type")
    check_keys(value, ORACLE_KEYS[kind], at, f"the {kind} oracle")
    required = ("max_epochs",) if kind == "hyperband" else ("max_trials", "epochs")
    for key in required:
        if value.get(key) is None:
            raise (at / key).error(f"is required by the {kind} oracle (a whole number >= 1)")
    minimums = {"max_epochs": 1, "factor": 2, "iterations": 1, "max_trials": 1, "epochs": 1, "num_initial_points": 1}
    settings = {k: integer(v, at / k, minimum=minimums[k]) for k, v in value.items() if k != "type" and v is not None}
    return OracleConfig(type=kind, **settings)


def read_objective(value: Any, at: At) -> Objective:
    if isinstance(value, str):
        value = {"name": value}
    if value is None:
        return Objective()
    value = mapping(value, at, "{name: val_auc, direction: max}")
    check_keys(value, ("name", "direction"), at, "objective")
    name = _metric(value.get("name", "val_auc"), at / "name")
    natural = _metric_mode(name)
    direction = one_of(value.get("direction", natural), ("max", "min"), at / "direction")
    if direction != natural:
        raise (at / "direction").error(f"{name} should be {'maximized' if natural == 'max' else 'minimized'}"
                                       f" (direction: {natural}), but got direction: {direction}")
    return Objective(name=name, direction=direction)


STOPPING_READERS = {"monitor": _metric, "patience": _minimum(0), "restore_best_weights": boolean,
             "min_delta": _non_negative}
FINALIZE_READERS = {"scale_epochs": boolean}
SELECTION_READERS = {"top_k": _minimum(1), "seeds": _minimum(1)}
FINETUNE_READERS = {"unfreeze": lambda v, at: one_of(v, UNFREEZE_POLICIES, at), "top_blocks": _minimum(1),
             "from_layer": optional_text, "learning_rate": _positive, "epochs": _minimum(1),
             "drop_margin": _non_negative, "max_retries": _minimum(0)}


def read_feature_cache(value: Any, family: str, augmentation: Augmentation, at: At) -> FeatureCacheConfig | None:
    """The resnet50v2_head cache settings (on by default); ``true``/``false`` switch it with default views."""
    if family != "resnet50v2_head":
        if value is not None:
            raise at.error(f"applies to family resnet50v2_head only (its frozen backbone is what is cached); "
                           f"this study is {family}: remove the key")
        return None
    if isinstance(value, bool):
        return FeatureCacheConfig(enabled=value)
    config = read_section(value, FeatureCacheConfig, {"enabled": boolean, "views": _minimum(0)}, at)
    if config.views > _MAX_VIEWS:
        raise (at / "views").error(f"must be <= {_MAX_VIEWS} (each view is one backbone pass over the training "
                                   f"images), but got {config.views}")
    if config.enabled and config.views == 0 and augmentation.enabled:
        raise (at / "views").error("must be >= 1 while augmentation is on: with 0 views the head would train on "
                                   "clean features only; set augmentation: false to train without augmentation")
    return config


# --------------------------------------------------------------------------- operating point and calibration
THRESHOLD_POLICIES = ("fixed", "youden", "sensitivity", "specificity")
CALIBRATION_METHODS = ("none", "temperature")
_THRESHOLD_CHOICES = ("valid choices: a fixed threshold in (0, 1) such as 0.5, youden, {sensitivity: t} or "
                      "{specificity: t} with t in (0, 1)")


@dataclass(frozen=True)
class ThresholdConfig:
    """The operating point ``finalize`` chooses on validation predictions of train-only models.

    ``fixed``: ``target`` is the threshold itself (0.5 by default, nothing is computed); ``youden``: the
    threshold with the largest sensitivity + specificity - 1 (``target`` None); ``sensitivity`` /
    ``specificity``: ``target`` is the rate to reach, in (0, 1) (see ``hpstudy.calibration``).
    """

    policy: str = "fixed"
    target: float | None = 0.5

    @property
    def needs_predictions(self) -> bool:
        """True when the threshold is chosen on validation predictions (every policy but ``fixed``)."""
        return self.policy != "fixed"

    def to_dict(self) -> Any:
        """The YAML form: ``0.5``, ``youden`` or ``{sensitivity: 0.95}``."""
        if self.policy == "fixed":
            return self.target
        return self.policy if self.target is None else {self.policy: self.target}


def _rate(value: Any, at: At) -> float:
    if isinstance(value, bool) or not (is_number(value) or isinstance(value, str) and NUMERIC.match(value.strip())):
        raise at.error(f"must be a number strictly between 0 and 1, but got {value!r}; {_THRESHOLD_CHOICES}")
    result = number(value, at)
    if not 0.0 < result < 1.0:
        raise at.error(f"must be strictly between 0 and 1, but got {value!r}; {_THRESHOLD_CHOICES}")
    return result


def read_threshold(value: Any, at: At) -> ThresholdConfig:
    """``threshold:``: a fixed value in (0, 1), ``youden``, ``{sensitivity: t}`` or ``{specificity: t}``."""
    if value is None:
        return ThresholdConfig()
    if isinstance(value, Mapping):
        check_keys(value, THRESHOLD_POLICIES[2:], at, "threshold")
        if len(value) != 1:
            raise at.error(f"must name one policy, but got {dict(value)!r}; {_THRESHOLD_CHOICES}")
        ((policy, target),) = value.items()
        return ThresholdConfig(str(policy), _rate(target, at / policy))
    if isinstance(value, str) and value.strip().lower() == "youden":
        return ThresholdConfig("youden", None)
    if isinstance(value, str) and not NUMERIC.match(value.strip()):
        raise at.error(f"unknown policy {value!r}; {_THRESHOLD_CHOICES}")
    return ThresholdConfig("fixed", _rate(value, at))


def read_calibration(value: Any, at: At) -> str:
    """``calibration:``: ``none`` (default) or ``temperature`` (temperature scaling fitted at finalize)."""
    return "none" if value is None else one_of(value, CALIBRATION_METHODS, at)


@dataclass(frozen=True)
class ProbesConfig:
    """Regions of the shortcut probes (``hpstudy probe``), as fractions of the image side.

    ``center``: side of the central box (the lung fields of a PA chest X-ray sit in its middle);
    ``border``: width of the band along the four edges (where markers, text and collimation edges sit).
    The two never overlap: ``border <= (1 - center) / 2``.
    """

    center: float = 0.5
    border: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center, "border": self.border}


def _open_fraction(value: Any, at: At) -> float:
    result = number(value, at)
    if not 0.0 < result < 1.0:
        raise at.error(f"must be a fraction of the image side in (0, 1), but got {value!r}")
    return result


PROBES_READERS = {"center": _open_fraction, "border": _open_fraction}


def read_probes(value: Any, at: At) -> ProbesConfig:
    """The ``probes`` section: ``{center: 0.5, border: 0.1}`` (both optional)."""
    config = read_section(value, ProbesConfig, PROBES_READERS, at)
    if config.border > (1.0 - config.center) / 2.0 + 1e-12:
        raise (at / "border").error(f"must be at most (1 - center) / 2 = {(1.0 - config.center) / 2.0:g} so the "
                                    f"border band and the central box (center {config.center:g}) do not overlap, "
                                    f"but got {config.border:g}")
    return config


def read_finetune(value: Any, at: At) -> FinetuneConfig:
    config = read_section(value, FinetuneConfig, FINETUNE_READERS, at)
    if config.unfreeze == "from_layer" and not config.from_layer:
        raise (at / "from_layer").error("is required when unfreeze is from_layer (the first backbone layer "
                                        "to train, e.g. conv5_block1_preact_bn)")
    return config


def read_augmentation(value: Any, at: At) -> Augmentation:
    if value is True:
        return Augmentation()
    if isinstance(value, Mapping):
        value = {k: float(v) if isinstance(v, str) and NUMERIC.match(v.strip()) else v for k, v in value.items()}
    try:
        return Augmentation.from_mapping(value, where=at.key)
    except ConfigError as exc:
        raise ConfigError(f"{at.source}: {exc}") from None


def read_image_size(value: Any, at: At) -> tuple[int, int]:
    sides = [value, value] if not isinstance(value, (list, tuple)) else list(value)
    if len(sides) != 2:
        raise at.error(f"must be one size or [height, width], but got {value!r}")
    size = tuple(integer(s, at) for s in sides)
    if min(size) < 32:
        raise at.error(f"sides must be >= 32 px (ResNet50V2 and the CNN's pooling need them), but got {value!r}")
    return size  # type: ignore[return-value]


def abspath(path: str | Path, base: Path) -> Path:
    path = Path(path).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else base / path))


def read_path(value: Any, at: At, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise at.error(f"must be a path (folder or .zip) or null, but got {value!r}")
    return abspath(value, base)


def read_weights(value: Any, family: str, base: Path, at: At) -> str:
    """``imagenet``, ``none`` or the absolute path of an existing weights file (resnet50v2_head only)."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "imagenet")):
        return "none" if value is None else value.lower()
    if not isinstance(value, (str, Path)):
        raise at.error(f"must be imagenet, none or the path of a weights file, but got {value!r}")
    if family != "resnet50v2_head":
        raise at.error(f"a weights file only applies to family resnet50v2_head (this study is {family}); "
                       f"use imagenet or none, but got {str(value)!r}")
    path = abspath(value, base)
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise at.error(f"a weights file must end with {', '.join(WEIGHT_SUFFIXES)}, but got {str(path)!r}")
    if not path.is_file():
        raise at.error(f"weights file not found: {path}")
    return str(path)


def read_study_space(value: Any, family: str, base: Path, at: At) -> tuple[SearchSpace, Path | None]:
    """The study's search space: a path relative to the study file, or an inline mapping."""
    if isinstance(value, Mapping):
        return parse_search_space(value, source=f"{at.source} (search_space)", family=family), None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise at.error(f"must be the path of a search-space YAML file, but got {value!r}")
    path = abspath(value, base)
    if not path.is_file():
        raise at.error(f"search space file not found: {path}")
    try:
        return load_search_space(path, family=family), path
    except ConfigError as exc:
        raise at.error(f"{exc}") from None


