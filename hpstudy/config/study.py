"""Study definitions: ``studies/*.yaml`` into a validated ``StudyConfig``, overrides, and differences
between two configurations (what a resume refuses).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from hpstudy.config._values import (
    FAMILIES,
    SAFE_NAME,
    At,
    YamlLoader,
    boolean,
    check_keys,
    integer,
    mapping,
    one_of,
    read_yaml,
)
from hpstudy.config.initial import InitialTrials, read_initial_trials
from hpstudy.config.sections import (
    FINALIZE_READERS,
    FINETUNE_READERS,
    ORACLE_KEYS,
    PROBES_READERS,
    SELECTION_READERS,
    STOPPING_READERS,
    EarlyStopping,
    FeatureCacheConfig,
    FinalizeConfig,
    FinetuneConfig,
    Objective,
    OracleConfig,
    ProbesConfig,
    SearchBudget,
    SelectionConfig,
    ThresholdConfig,
    abspath,
    optional_text,
    read_augmentation,
    read_calibration,
    read_feature_cache,
    read_finetune,
    read_image_size,
    read_objective,
    read_oracle,
    read_path,
    read_probes,
    read_section,
    read_study_space,
    read_threshold,
    read_weights,
)
from hpstudy.config.settings import LEAK_SEVERITIES, NORMALIZATIONS, Augmentation
from hpstudy.config.space import (
    SearchSpace,
)
from hpstudy.errors import ConfigError


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
    selection: SelectionConfig = SelectionConfig()  # top-k re-evaluation before the winner (hpstudy confirm)
    threshold: ThresholdConfig = ThresholdConfig()  # the operating point chosen at finalize
    calibration: str = "none"  # or "temperature", fitted at finalize
    # Set by a repeated oracle comparison only (not YAML keys): the repeat's own run directory
    # (``<name>/repeat-<r>/``) and its equal budget. None keeps a study as it was.
    run_dir: Path | None = None
    budget: SearchBudget | None = None
    probes: ProbesConfig = ProbesConfig()  # regions of the shortcut probes; read after the search only
    initial_trials: InitialTrials | None = None  # configurations tried first (config.initial)

    @property
    def study_dir(self) -> Path:
        """The run directory: ``<folder of the YAML>/<name>`` (``studies/<name>`` without a file), or ``run_dir``."""
        if self.run_dir is not None:
            return Path(self.run_dir)
        return (self.source.parent if self.source else Path("studies")) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict; paths as strings; the search space inlined so a frozen copy stands alone."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("feature_cache", "run_dir", "budget", "initial_trials") and value is None:
                continue  # no frozen backbone, not a repeat, no warm start: keeps their study.yaml
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
        return replace(self, data=abspath(data, Path.cwd()))


STUDY_KEYS = ("name", "data", "family", "search_space", "oracle", "objective", "early_stopping", "seed",
              "image_size", "normalization", "augmentation", "class_weights", "executions_per_trial", "weights",
              "positive_class", "leak_check", "deterministic", "tensorboard", "keep_checkpoints",
              "mixed_precision", "jit_compile", "trials_per_process", "finalize", "finetune", "feature_cache",
              "selection", "threshold", "calibration", "probes", "initial_trials")
_BOOL_KEYS = ("class_weights", "deterministic", "tensorboard", "keep_checkpoints", "mixed_precision", "jit_compile")
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "oracle": tuple(dict.fromkeys(k for keys in ORACLE_KEYS.values() for k in keys)),
    "objective": ("name", "direction"), "early_stopping": tuple(STOPPING_READERS), "finalize": tuple(FINALIZE_READERS),
    "finetune": tuple(FINETUNE_READERS), "augmentation": tuple(f.name for f in fields(Augmentation)),
    "feature_cache": ("enabled", "views"), "selection": tuple(SELECTION_READERS),
    "threshold": ("sensitivity", "specificity"),
    "probes": tuple(PROBES_READERS), "initial_trials": ("from", "top_k"),
}


def _override_items(overrides: Sequence[str] | Mapping[str, Any], at: At) -> list[tuple[str, Any, str]]:
    """``KEY=VALUE`` strings (values read as YAML) or a mapping, as (dotted key, value, text) triples."""
    if isinstance(overrides, Mapping):
        return [(str(k), v, f"{k}={v!r}") for k, v in overrides.items()]
    items = []
    for text in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, raw = str(text).partition("=")
        if not sep or not key.strip():
            raise at.error(f"override {text!r} must look like KEY=VALUE, e.g. oracle.max_trials=5")
        try:
            value = yaml.load(raw, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise at.error(f"override {text!r}: the value is not valid YAML ({exc})") from None
        items.append((key.strip(), value, str(text)))
    return items


def _apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any], at: At) -> dict:
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
        elif head == "threshold":  # one policy: threshold.sensitivity=0.9 replaces whatever was there
            section = {}
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
    at = At(str(source) if source is not None else "<mapping>")
    raw = _apply_overrides(mapping(data, at, "{name: ..., family: ..., search_space: ..., oracle: ...}"),
                           overrides, at)
    check_keys(raw, STUDY_KEYS, at, "a study")
    base = Path(source).parent if source is not None else Path.cwd()
    for key in ("name", "family", "search_space", "oracle"):
        if raw.get(key) is None:
            raise (at / key).error("is required")
    name = raw["name"]
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", ".."):
        raise (at / "name").error(f"must be a safe folder name (letters, digits, _ . -), but got {name!r}")
    family = one_of(raw["family"], FAMILIES, at / "family")
    space, space_path = read_study_space(raw["search_space"], family, base, at / "search_space")
    weights = read_weights(raw.get("weights", "imagenet" if family == "resnet50v2_head" else "none"), family, base,
                       at / "weights")
    pretrained = family == "resnet50v2_head" and weights != "none"
    normalization = one_of(raw.get("normalization", "fixed" if pretrained else "dataset"), NORMALIZATIONS,
                            at / "normalization")
    if pretrained and normalization != "fixed":
        raise (at / "normalization").error(
            f"must be fixed with pretrained ResNet50V2 weights ({weights}): the backbone expects pixels scaled "
            f"as in ImageNet training, not standardized; but got {normalization!r}")
    augmentation = read_augmentation(raw.get("augmentation", True), at / "augmentation")
    return StudyConfig(
        name=name, source=abspath(source, Path.cwd()) if source is not None else None,
        data=abspath(data_path, Path.cwd()) if data_path is not None else read_path(raw.get("data"), at / "data", base),
        family=family, search_space=space, search_space_path=space_path,
        oracle=read_oracle(raw["oracle"], at / "oracle"),
        objective=read_objective(raw.get("objective"), at / "objective"),
        early_stopping=read_section(raw.get("early_stopping"), EarlyStopping, STOPPING_READERS, at / "early_stopping"),
        seed=integer(raw.get("seed", 42), at / "seed", minimum=0),
        image_size=read_image_size(raw.get("image_size", 224 if family == "resnet50v2_head" else 128),
                                   at / "image_size"),
        normalization=normalization,
        augmentation=augmentation,
        executions_per_trial=integer(raw.get("executions_per_trial", 1), at / "executions_per_trial", minimum=1),
        weights=weights,
        positive_class=optional_text(raw.get("positive_class"), at / "positive_class"),
        leak_check=one_of(raw.get("leak_check", "warn"), LEAK_SEVERITIES, at / "leak_check"),
        finalize=read_section(raw.get("finalize"), FinalizeConfig, FINALIZE_READERS, at / "finalize"),
        finetune=read_finetune(raw.get("finetune"), at / "finetune"),
        feature_cache=read_feature_cache(raw.get("feature_cache"), family, augmentation, at / "feature_cache"),
        trials_per_process=integer(raw.get("trials_per_process", 0), at / "trials_per_process", minimum=0),
        selection=read_section(raw.get("selection"), SelectionConfig, SELECTION_READERS, at / "selection"),
        threshold=read_threshold(raw.get("threshold"), at / "threshold"),
        calibration=read_calibration(raw.get("calibration"), at / "calibration"),
        probes=read_probes(raw.get("probes"), at / "probes"),
        initial_trials=read_initial_trials(raw.get("initial_trials"), space, base, at / "initial_trials"),
        **{key: boolean(raw.get(key, False), at / key) for key in _BOOL_KEYS},
    )


def load_study(path: str | Path, *, data: str | Path | None = None,
               overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """Read and validate a study YAML file (see ``parse_study``); ``data`` replaces the YAML's data."""
    path = Path(path)
    raw = read_yaml(path, "study")
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; expected a study definition (name, family, ...)")
    return parse_study(raw, source=path, data_path=data, overrides=overrides)


def resolve_config(config: StudyConfig | str | Path, *, data: str | Path | None = None,
                   overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """A ``StudyConfig`` from an object or a YAML path, with ``--data`` and overrides applied.

    Raises:
        ConfigError: a bad YAML file, or overrides given with a ``StudyConfig`` object.
    """
    if isinstance(config, StudyConfig):
        if overrides:
            raise ConfigError("overrides apply to a YAML path; change the StudyConfig object instead")
        return config.with_data(data) if data is not None else config
    return load_study(config, data=data, overrides=overrides)


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
