"""Typed, validated search spaces and study definitions loaded from YAML.

A search space (``search_spaces/*.yaml``) names a model family and the hyperparameters it tunes in a
short form (``{type: float, low, high, log}``, ``{type: choice, values}``, ...); a study
(``studies/*.yaml``) names its data, family, search space, oracle and budget. Both become frozen
dataclasses. Every error is a ``ConfigError`` naming the file, the key path and the bad value, and
saying what was expected. Nothing here imports TensorFlow: validating a YAML file is instant.

YAML note: PyYAML reads ``1e-4`` (no dot) as a string; files are read with a loader that reads it as
a float, and numeric strings are accepted (coerced) wherever a number is expected.

The package: ``_values`` (constants, YAML loader, value readers), ``settings`` (augmentation,
normalization and leak-check settings the data pipeline reads too), ``space`` (hyperparameters and search
spaces), ``sections`` (the parts of a study), ``study`` (``StudyConfig``, overrides, differences).
Import from ``hpstudy.config``; the modules are an implementation detail.
"""

from __future__ import annotations

from hpstudy.config._values import (
    FAMILIES,
    FAMILY_HYPERPARAMETERS,
    HP_TYPES,
    METRICS,
    OPTIMIZER_NAMES,
    ORACLE_TYPES,
    POOLINGS,
    SAFE_NAME,
    UNFREEZE_POLICIES,
    WEIGHT_SUFFIXES,
    read_yaml,
)
from hpstudy.config.domains import HARD_LIMITS, hard_limits
from hpstudy.config.frozen import AFTER_SEARCH, frozen_fingerprint, stage_config
from hpstudy.config.initial import DEFAULT_TOP_K, InitialTrials
from hpstudy.config.ranges import Limits
from hpstudy.config.sections import (
    CALIBRATION_METHODS,
    THRESHOLD_POLICIES,
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
)
from hpstudy.config.settings import LEAK_SEVERITIES, NORMALIZATIONS, Augmentation
from hpstudy.config.space import HyperParam, SearchSpace, load_search_space, parse_search_space
from hpstudy.config.study import STUDY_KEYS, StudyConfig, diff_configs, load_study, parse_study, resolve_config

__all__ = [
    "FAMILY_HYPERPARAMETERS", "FAMILIES", "HP_TYPES", "OPTIMIZER_NAMES", "POOLINGS", "ORACLE_TYPES", "METRICS",
    "UNFREEZE_POLICIES", "WEIGHT_SUFFIXES", "LEAK_SEVERITIES", "NORMALIZATIONS", "Augmentation", "STUDY_KEYS",
    "HyperParam", "SearchSpace", "load_search_space", "parse_search_space", "OracleConfig", "Objective",
    "EarlyStopping", "FinalizeConfig", "FinetuneConfig", "FeatureCacheConfig", "StudyConfig", "load_study",
    "parse_study", "diff_configs", "resolve_config", "stage_config", "frozen_fingerprint", "AFTER_SEARCH",
    "SelectionConfig",
    "THRESHOLD_POLICIES", "CALIBRATION_METHODS", "ThresholdConfig", "SAFE_NAME",
    "SearchBudget",
    "ProbesConfig",
    "InitialTrials", "DEFAULT_TOP_K", "HARD_LIMITS", "hard_limits", "Limits", "read_yaml",
]
