"""The configuration the stages after the search run with: the one the search froze, never a mix.

``hpstudy search … --set image_size=64`` freezes the resolved configuration, overrides included, in the
run's ``study.yaml``. ``finalize``, ``evaluate``, ``gradcam``, ``status`` and ``export`` read it back from
there, so a first look at 64 px is finalized and evaluated at 64 px without repeating the ``--set``, and
the data path given to the search is remembered. Settings that only steer the later stages
(``AFTER_SEARCH``) may still be changed on their command line; any other override that would differ from
the search is refused with the difference. A study YAML edited after the search is noted and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpstudy.config.study import STUDY_KEYS, StudyConfig, diff_configs, parse_study, resolve_config
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_frozen

__all__ = ["AFTER_SEARCH", "stage_config", "frozen_fingerprint"]

log = logging.getLogger("hpstudy")

# Settings a later stage may take from its own command line: where the data lives, and what only the
# stages after the search read. Everything else is what the search ran with.
AFTER_SEARCH = ("data", "source", "search_space_path", "finalize", "finetune", "leak_check", "tensorboard",
                "keep_checkpoints", "trials_per_process", "oracle.iterations", "oracle.max_trials",
                "selection", "threshold", "calibration", "probes", "run_dir", "budget")


def _changes(frozen: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    return [line for line in diff_configs(frozen, other) if not line.startswith(AFTER_SEARCH)]


def _from_frozen(frozen: Mapping[str, Any], *, source: Path | None, data: str | Path | None,
                 overrides: Sequence[str] | Mapping[str, Any]) -> StudyConfig:
    raw = {key: frozen[key] for key in STUDY_KEYS if key in frozen}
    return parse_study(raw, source=source, data_path=data, overrides=overrides)


def stage_config(study: StudyConfig | str | Path, *, stage: str, data: str | Path | None = None,
                 overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """The configuration ``stage`` runs with: the search's frozen one, with this command's later-stage settings.

    Args:
        study: the study YAML (or ``StudyConfig``) that names the run.
        stage: the command, for messages (e.g. ``"finalize"``).
        data: data folder or zip; default: the one the search used.
        overrides: ``KEY=VALUE`` settings; only ``AFTER_SEARCH`` keys may differ from the search.

    Raises:
        ConfigError: a bad YAML file or override.
        StudyError: the study has not been searched yet, or an override differs from the search.
    """
    requested = resolve_config(study, data=data, overrides=overrides)
    paths = StudyPaths(requested.study_dir)
    frozen = read_frozen(paths).get("config")
    if not frozen:
        target = requested.source or "STUDY.yaml"
        raise StudyError(f"study '{requested.name}' has not been searched yet ({paths.frozen_config} is missing): "
                         f"run `hpstudy search {target}` first")
    with_overrides = overrides if not isinstance(study, StudyConfig) else ()
    config = _from_frozen(frozen, source=requested.source, data=data, overrides=with_overrides)
    refused = _changes(frozen, config.to_dict())
    if refused:
        raise StudyError(f"{stage}: the settings given would differ from what the search ran with (search -> given: "
                         + "; ".join(refused) + f"); {stage} uses the configuration frozen in {paths.frozen_config}: "
                         "drop those --set options, or search a new study with them")
    drift = _changes(frozen, requested.to_dict())
    if drift:
        log.info("note: %s differs from the configuration the search ran with (search -> YAML: %s); %s uses the "
                 "search's, frozen in "
                 "%s", requested.source or "the study", "; ".join(drift), stage, paths.frozen_config)
    return config


def frozen_fingerprint(config: StudyConfig) -> str | None:
    """The train+val data fingerprint the search recorded for this study (None before the first search)."""
    return read_frozen(StudyPaths(config.study_dir)).get("data_fingerprint")
