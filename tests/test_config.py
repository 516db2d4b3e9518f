"""Search spaces and studies from YAML: every bad input is a ConfigError naming file, key and value."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hpstudy.config import (
    AFTER_SEARCH,
    FAMILY_HYPERPARAMETERS,
    EarlyStopping,
    HyperParam,
    OracleConfig,
    ProbesConfig,
    SearchSpace,
    StudyConfig,
    diff_configs,
    load_search_space,
    load_study,
    parse_search_space,
    parse_study,
)
from hpstudy.config.settings import Augmentation
from hpstudy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LR = {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True, "default": 1.0e-3}
SPACE = {"family": "baseline_cnn", "hyperparameters": {
    "learning_rate": LR,
    "batch_size": {"type": "choice", "values": [16, 32, 64], "default": 32},
    "optimizer": {"type": "choice", "values": ["adam", "sgd", "rmsprop", "adamw"], "default": "adam"},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1, "default": 0.3},
    "n_blocks": {"type": "int", "low": 2, "high": 4, "default": 3},
    "use_batchnorm": {"type": "bool", "default": True},
}}


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def space_file(folder: Path, **hyperparameters: Any) -> Path:
    return write(folder, "space.yaml", {"family": "baseline_cnn", "hyperparameters": hyperparameters})


def study_data(**changes: Any) -> dict[str, Any]:
    study = {"name": "s1", "family": "baseline_cnn", "search_space": "space.yaml",
             "oracle": {"type": "random", "max_trials": 4, "epochs": 3}}
    study.update(changes)
    return {k: v for k, v in study.items() if v is not DROP}


DROP = object()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "space.yaml", SPACE)
    return tmp_path


def study_file(folder: Path, **changes: Any) -> Path:
    return write(folder, "study.yaml", study_data(**changes))


# --------------------------------------------------------------------------- search spaces
def test_search_space_loads_into_typed_params(folder: Path) -> None:
    space = load_search_space(folder / "space.yaml", family="baseline_cnn")
    assert space.names == tuple(SPACE["hyperparameters"]) and space.source == folder / "space.yaml"
    assert space["learning_rate"] == HyperParam("learning_rate", "float", low=1e-4, high=1e-2, log=True, default=1e-3)
    assert space["batch_size"].values == (16, 32, 64) and space["batch_size"].ordered
    assert not space["optimizer"].ordered and not space["optimizer"].is_numeric
    assert space["batch_size"].is_numeric and space["n_blocks"].is_numeric
    assert "dropout" in space and "momentum" not in space
    assert space.defaults() == {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "dropout": 0.3,
                                "n_blocks": 3, "use_batchnorm": True}
    assert parse_search_space(space.to_dict()) == space
    with pytest.raises(KeyError, match="momentum"):
        space["momentum"]


def test_defaults_are_filled_in_and_numeric_strings_coerced(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "family: baseline_cnn\nhyperparameters:\n"
                 "  learning_rate: {type: float, low: 1e-4, high: '1e-2', log: true}\n"
                 "  momentum: {type: choice, values: [1e-1, 0.9], default: 9e-1}\n"
                 "  l2: {type: choice, values: ['0', 1e-4, 0.001]}\n"
                 "  n_blocks: {type: int, low: '2', high: 3.0}\n"
                 "  use_batchnorm: {type: bool}\n")
    space = load_search_space(path)
    assert space["learning_rate"].low == 1e-4 and space["learning_rate"].default == 1e-4
    assert space["momentum"].values == (0.1, 0.9) and space["momentum"].default == 0.9
    assert space["l2"].values == (0.0, 1e-4, 1e-3)
    assert (space["n_blocks"].low, space["n_blocks"].high, space["n_blocks"].default) == (2, 3, 2)
    assert space["use_batchnorm"].default is False


BAD_PARAMS = [
    ({"learning_rate": {"type": "real", "low": 0.1, "high": 1}}, r"hyperparameters\.learning_rate\.type: .*float, int, choice, bool.*'real'"),
    ({"dropout": {"type": "float", "high": 0.5}}, r"hyperparameters\.dropout\.low: is required"),
    ({"dropout": {"type": "float", "low": 0.1, "high": 0.01}},
     r"hyperparameters\.dropout: `low <= high` must hold, but got low=0\.1, high=0\.01"),
    ({"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
     r"hyperparameters\.learning_rate\.low: `low > 0` must hold for log sampling, but got low=0\.0"),
    ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0}},
     r"hyperparameters\.dropout\.step: `step > 0` must hold, but got step=0"),
    ({"learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "step": 10}},
     r"hyperparameters\.learning_rate\.step: `step` cannot be combined with `log: true`"),
    ({"n_blocks": {"type": "int", "low": 1.5, "high": 3}}, r"hyperparameters\.n_blocks\.low: must be a whole number, but got 1\.5"),
    ({"dense_units": {"type": "choice", "values": []}}, r"hyperparameters\.dense_units\.values: must be a non-empty list"),
    ({"dense_units": {"type": "choice", "values": [16, 32, 16]}}, r"hyperparameters\.dense_units\.values: must be distinct.*16"),
    ({"dense_units": {"type": "choice", "values": [16, "x"]}}, r"hyperparameters\.dense_units\.values: must all be"),
    ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.7}},
     r"hyperparameters\.dropout\.default: `low <= default <= high` must hold, but got default=0\.7"),
    ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.2, "default": 0.3}},
     r"hyperparameters\.dropout\.default: must lie on the grid"),
    ({"optimizer": {"type": "choice", "values": ["adam", "sgd"], "default": "rmsprop"}},
     r"hyperparameters\.optimizer\.default: must be one of the values \['adam', 'sgd'\], but got 'rmsprop'"),
    ({"optimizer": {"type": "choice", "values": ["adam"], "ordered": True}}, r"hyperparameters\.optimizer\.ordered: .*numeric"),
    ({"dense_units": {"type": "choice", "values": [64, 16]}}, r"hyperparameters\.dense_units\.values: .*increasing order"),
    ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "min": 0}},
     r"hyperparameters\.dropout\.min: unknown key 'min' in a float hyperparameter.*valid keys: type, low, high, step, log, default"),
    ({"use_batchnorm": {"type": "bool", "default": "yes"}}, r"hyperparameters\.use_batchnorm\.default: must be true or false"),
    ({"learning_rate": {"type": "float", "low": "tiny", "high": 0.1}},
     r"hyperparameters\.learning_rate\.low: must be a finite number, but got 'tiny'"),
    ({"learning_rate": {"type": "float", "low": float("nan"), "high": 0.1}}, r"hyperparameters\.learning_rate\.low: must be a finite"),
    ({"learning_rate": 0.001}, r"hyperparameters\.learning_rate: must be a mapping such as \{type: float.*but got 0\.001"),
    ({"growth": {"type": "int", "low": 1, "high": 2}},
     r"hyperparameters\.growth: 'growth' is not a hyperparameter of family 'baseline_cnn'; valid names: learning_rate, .*pooling"),
    ({"dropout": {"type": "float", "low": 0.5, "high": 1.5}}, r"hyperparameters\.dropout\.high: dropout must be in \[0, 1\), but got 1\.5"),
    ({"optimizer": {"type": "choice", "values": ["adam", "lion"]}},
     r"hyperparameters\.optimizer\.values: optimizer must be one of adam, sgd, rmsprop, adamw, but got 'lion'"),
    ({"n_blocks": {"type": "float", "low": 1, "high": 3}}, r"hyperparameters\.n_blocks: n_blocks takes whole numbers .*but got type float"),
    ({"pooling": {"type": "choice", "values": ["max"]}}, r"hyperparameters\.pooling\.values: pooling must be one of flatten, global_avg"),
]


@pytest.mark.parametrize(("hyperparameters", "message"), BAD_PARAMS)
def test_bad_hyperparameters_name_file_key_and_value(tmp_path: Path, hyperparameters: dict, message: str) -> None:
    path = space_file(tmp_path, **hyperparameters)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + message):
        load_search_space(path)


@pytest.mark.parametrize(("content", "message"), [
    ("family: vit\nhyperparameters: {}\n", r"family: must be one of baseline_cnn, resnet50v2_head, but got 'vit'"),
    ("hyperparameters: {}\n", r"family: is required"),
    ("family: baseline_cnn\nhyperparameters: [learning_rate]\n", r"hyperparameters: must be a mapping"),
    ("family: baseline_cnn\nparams: {}\n", r"params: unknown key 'params' in a search space"),
    ("- family\n", r"must be a mapping"),
    ("family: baseline_cnn\nhyperparameters:\n  dropout: {type: float, low: 0, high: 0.5}\n"
     "  dropout: {type: float, low: 0, high: 0.2}\n", r"invalid YAML at line 4, column 3: duplicate key 'dropout'"),
    ("family: baseline_cnn\nhyperparameters:\n  dropout: {type: float, low: 0\n", r"invalid YAML at line \d+"),
    ("", r"the file is empty"),
])
def test_bad_search_space_files(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "space.yaml", content)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + message):
        load_search_space(path)


def test_missing_file_and_family_mismatch(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"search space file not found: .*nope\.yaml"):
        load_search_space(folder / "nope.yaml")
    with pytest.raises(ConfigError, match=r"space\.yaml: family: this space is written for family 'baseline_cnn', "
                                          r"but it is used for family 'resnet50v2_head'"):
        load_search_space(folder / "space.yaml", family="resnet50v2_head")


def test_resnet_family_refuses_cnn_hyperparameters() -> None:
    with pytest.raises(ConfigError, match=r"<mapping>: hyperparameters\.n_blocks: .*valid names: learning_rate.*dropout"):
        parse_search_space({"family": "resnet50v2_head", "hyperparameters": {"n_blocks": {"type": "int", "low": 1, "high": 2}}})
    assert set(FAMILY_HYPERPARAMETERS["resnet50v2_head"]) < set(FAMILY_HYPERPARAMETERS["baseline_cnn"])


def test_register_sets_ranges_and_returns_defaults() -> None:
    import keras_tuner as kt

    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {
        **SPACE["hyperparameters"], "momentum": {"type": "choice", "values": [0.5, 0.9], "ordered": False},
        "kernel_size": {"type": "int", "low": 3, "high": 7, "step": 2, "default": 5},
        "dense_units": {"type": "int", "low": 16, "high": 256, "log": True, "default": 64}}})
    hp = kt.HyperParameters()
    assert {p.name: p.register(hp) for p in space.params} == space.defaults()
    declared = {h.name: h for h in hp.space}
    lr = declared["learning_rate"]
    assert (lr.min_value, lr.max_value, lr.sampling, lr.default) == (1e-4, 1e-2, "log", 1e-3)
    assert (declared["dropout"].step, declared["dropout"].sampling) == (0.1, "linear")
    assert (declared["n_blocks"].min_value, declared["n_blocks"].max_value, declared["n_blocks"].step) == (2, 4, 1)
    assert (declared["kernel_size"].step, declared["dense_units"].sampling) == (2, "log")
    assert list(declared["batch_size"].values) == [16, 32, 64] and declared["batch_size"].ordered
    assert declared["momentum"].ordered is False and declared["optimizer"].ordered is False
    assert isinstance(declared["use_batchnorm"], kt.engine.hyperparameters.Boolean)
    fresh = kt.HyperParameters()
    assert space.value(fresh, "dropout", 0.9) == 0.3 and space.value(fresh, "l2", 0.0) == 0.0
    assert set(fresh.values) == {"dropout"}  # only declared names are registered


# --------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_load(path: Path) -> None:
    space = load_search_space(path)
    assert space.params and parse_search_space(space.to_dict()) == space


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_load(path: Path) -> None:
    study = load_study(path)
    assert study.name == path.stem and study.data is None
    assert study.search_space_path is not None and study.search_space_path.parent == ROOT / "search_spaces"
    assert study.study_dir == ROOT / "studies" / study.name
    yaml.safe_dump(study.to_dict())


def test_shipped_spaces_cover_the_course_hyperparameters() -> None:
    cnn = load_search_space(ROOT / "search_spaces/baseline_cnn.yaml", family="baseline_cnn")
    assert {"dropout", "conv_dropout", "learning_rate", "batch_size", "base_filters", "n_blocks", "optimizer",
            "momentum", "dense_units", "use_batchnorm"} <= set(cnn.names)
    assert cnn["learning_rate"].log and set(cnn["optimizer"].values) == {"adam", "sgd", "rmsprop", "adamw"}
    head = load_search_space(ROOT / "search_spaces/resnet50v2_head.yaml", family="resnet50v2_head")
    assert {"dropout", "learning_rate", "batch_size", "dense_units", "optimizer"} <= set(head.names)
    assert head["learning_rate"].log


def test_demo_study_is_tiny() -> None:
    demo = load_study(ROOT / "studies/tiny_cnn.yaml")
    assert demo.family == "baseline_cnn" and demo.image_size == (32, 32) and demo.oracle.trial_epochs <= 3
    assert demo.search_space_path == ROOT / "search_spaces/demo_cnn.yaml"


def test_config_module_does_not_import_tensorflow() -> None:
    code = "import sys, hpstudy.config; sys.exit('tensorflow' in sys.modules or 'keras_tuner' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --------------------------------------------------------------------------- studies
def test_study_resolves_paths_and_defaults(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = write(folder, "backbone.weights.h5", "not really weights")
    (folder / "sub").mkdir()
    write(folder / "sub", "space.yaml", {"family": "resnet50v2_head", "hyperparameters": {"dropout": {
        "type": "float", "low": 0.0, "high": 0.5}}})
    path = study_file(folder, data="images", family="resnet50v2_head", search_space="sub/space.yaml",
                      weights="backbone.weights.h5")
    monkeypatch.chdir(folder / "sub")
    study = load_study(Path("..") / "study.yaml")
    assert study.source == path and study.data == folder / "images" and study.weights == str(weights)
    assert study.search_space_path == folder / "sub/space.yaml" and study.study_dir == folder / "s1"
    assert (study.normalization, study.image_size, study.seed, study.leak_check) == ("fixed", (224, 224), 42, "warn")
    assert study.augmentation == Augmentation() and study.early_stopping == EarlyStopping()
    assert study.oracle == OracleConfig(type="random", max_trials=4, epochs=3) and study.oracle.trial_epochs == 3
    assert study.with_data("x.zip").data == folder / "sub/x.zip"
    assert load_study(path, data="other").data == folder / "sub/other"
    assert parse_study(study_data(), source=path).data is None
    assert StudyConfig.__dataclass_params__.frozen


def test_yaml_reads_off_and_yes_as_text_and_true_false_as_booleans(folder: Path) -> None:
    text = study_data()
    path = write(folder, "study.yaml", yaml.safe_dump(text, sort_keys=False) + "leak_check: off\nclass_weights: True\n")
    study = load_study(path)
    assert study.leak_check == "off" and study.class_weights is True
    with pytest.raises(ConfigError, match="class_weights: must be true or false, but got 'yes'"):
        load_study(write(folder, "study.yaml", yaml.safe_dump(text, sort_keys=False) + "class_weights: yes\n"))


def test_study_options(folder: Path) -> None:
    study = load_study(study_file(
        folder, image_size=64, augmentation=False, objective="val_loss", seed=0, positive_class=1,
        early_stopping={"monitor": "val_loss", "patience": 0, "min_delta": "1e-3"},
        oracle={"type": "bayesian", "max_trials": 5, "epochs": 2, "num_initial_points": 2},
        finetune={"unfreeze": "from_layer", "from_layer": "conv5_block3_out", "learning_rate": "1e-5"},
        **{key: True for key in ("class_weights", "deterministic", "tensorboard", "keep_checkpoints",
                                 "mixed_precision", "jit_compile")}))
    assert study.image_size == (64, 64) and not study.augmentation.enabled and study.positive_class == "1"
    assert (study.objective.name, study.objective.direction) == ("val_loss", "min")
    assert study.early_stopping.mode == "min" and study.early_stopping.min_delta == 1e-3
    assert study.oracle.num_initial_points == 2 and study.finetune.learning_rate == 1e-5
    assert study.class_weights and study.jit_compile and study.keep_checkpoints
    assert EarlyStopping(monitor="val_precision").mode == "max"


def test_to_dict_is_plain_and_self_contained(folder: Path) -> None:
    study = load_study(study_file(folder, data="images"))
    document = study.to_dict()
    assert yaml.safe_load(yaml.safe_dump(document)) == document
    assert document["data"] == str(folder / "images") and document["image_size"] == [128, 128]
    assert document["oracle"] == {"type": "random", "max_trials": 4, "epochs": 3}
    assert document["early_stopping"]["patience"] == 5 and document["augmentation"]["rotation"] == 10.0
    assert parse_search_space(document["search_space"]) == study.search_space
    inline = parse_study(study_data(search_space=document["search_space"]), source=folder / "study.yaml")
    assert inline.search_space == study.search_space and inline.search_space_path is None


BAD_STUDIES = [
    ({"orcale": {}}, r"orcale: unknown key 'orcale' in a study \(did you mean 'oracle'\?\); valid keys: name, data"),
    ({"name": DROP}, r"name: is required"),
    ({"name": "../escape"}, r"name: must be a safe folder name .*'\.\./escape'"),
    ({"family": "vgg"}, r"family: must be one of baseline_cnn, resnet50v2_head, but got 'vgg'"),
    ({"family": "resnet50v2_head"}, r"search_space: .*space\.yaml: family: this space is written for family 'baseline_cnn'"),
    ({"search_space": "missing.yaml"}, r"search_space: search space file not found: .*missing\.yaml"),
    ({"oracle": {"type": "grid"}}, r"oracle\.type: must be one of hyperband, random, bayesian, but got 'grid'"),
    ({"oracle": {"type": "hyperband"}}, r"oracle\.max_epochs: is required by the hyperband oracle"),
    ({"oracle": {"type": "hyperband", "max_epochs": 0}}, r"oracle\.max_epochs: must be >= 1, but got 0"),
    ({"oracle": {"type": "hyperband", "max_epochs": 9, "factor": 1}}, r"oracle\.factor: must be >= 2, but got 1"),
    ({"oracle": {"type": "hyperband", "max_epochs": 9, "iterations": 0}}, r"oracle\.iterations: must be >= 1"),
    ({"oracle": {"type": "random", "max_trials": 0, "epochs": 3}}, r"oracle\.max_trials: must be >= 1, but got 0"),
    ({"oracle": {"type": "bayesian", "max_trials": 3, "epochs": 0}}, r"oracle\.epochs: must be >= 1, but got 0"),
    ({"oracle": {"type": "random", "max_trials": 3}}, r"oracle\.epochs: is required by the random oracle"),
    ({"oracle": {"type": "random", "max_trials": 3, "epochs": 2, "factor": 3}},
     r"oracle\.factor: unknown key 'factor' in the random oracle; valid keys: type, max_trials, epochs"),
    ({"oracle": "hyperband"}, r"oracle: must be a mapping such as \{type: hyperband"),
    ({"objective": {"name": "val_auc", "direction": "up"}}, r"objective\.direction: must be one of max, min, but got 'up'"),
    ({"objective": {"name": "auc"}}, r"objective\.name: must be a validation metric .*measured on the validation split"),
    ({"objective": {"name": "val_f2"}}, r"objective\.name: must be one of val_loss, val_accuracy, val_auc"),
    ({"objective": {"name": "val_loss", "direction": "max"}}, r"objective\.direction: val_loss should be minimized"),
    ({"early_stopping": {"patience": -1}}, r"early_stopping\.patience: must be >= 0, but got -1"),
    ({"early_stopping": {"monitor": "loss"}}, r"early_stopping\.monitor: must be a validation metric"),
    ({"early_stopping": {"patiense": 3}}, r"early_stopping\.patiense: unknown key .*did you mean 'patience'"),
    ({"image_size": 16}, r"image_size: sides must be >= 32 px.*but got 16"),
    ({"image_size": [128, "wide"]}, r"image_size: must be a whole number, but got 'wide'"),
    ({"image_size": [64, 64, 3]}, r"image_size: must be one size or \[height, width\]"),
    ({"normalization": "minmax"}, r"normalization: must be one of fixed, dataset, per_image, but got 'minmax'"),
    ({"leak_check": "ignore"}, r"leak_check: must be one of warn, error, off, but got 'ignore'"),
    ({"executions_per_trial": 0}, r"executions_per_trial: must be >= 1, but got 0"),
    ({"seed": "abc"}, r"seed: must be a whole number, but got 'abc'"),
    ({"weights": "backbone.h5"}, r"weights: a weights file only applies to family resnet50v2_head"),
    ({"finetune": {"unfreeze": "some"}}, r"finetune\.unfreeze: must be one of all, top_blocks, from_layer, but got 'some'"),
    ({"finetune": {"unfreeze": "from_layer"}}, r"finetune\.from_layer: is required when unfreeze is from_layer"),
    ({"finetune": {"learning_rate": 0}}, r"finetune\.learning_rate: must be > 0, but got 0"),
    ({"augmentation": {"rotation": 500}}, r"augmentation\.rotation must be a number in \[0, 180\.0\], but got 500"),
    ({"augmentation": {"flip": True}}, r"augmentation: unknown key\(s\) \['flip'\]"),
    ({"finalize": {"scale_epochs": "yes"}}, r"finalize\.scale_epochs: must be true or false, but got 'yes'"),
    ({"data": 3}, r"data: must be a path \(folder or \.zip\) or null, but got 3"),
    ({"threshold": 1.5}, r"threshold: must be strictly between 0 and 1, but got 1\.5; valid choices: a fixed "
                         r"threshold in \(0, 1\) such as 0\.5, youden, \{sensitivity: t\} or \{specificity: t\}"),
    ({"threshold": {"sensitivity": 1.0}}, r"threshold\.sensitivity: must be strictly between 0 and 1, but got 1\.0; "
                                          r"valid choices"),
    ({"threshold": {"specificity": 0}}, r"threshold\.specificity: must be strictly between 0 and 1, but got 0"),
    ({"threshold": "median"}, r"threshold: unknown policy 'median'; valid choices: .*youden"),
    ({"threshold": {"ppv": 0.9}}, r"threshold\.ppv: unknown key 'ppv' in threshold; valid keys: sensitivity, "
                                  r"specificity"),
    ({"threshold": {"sensitivity": 0.9, "specificity": 0.9}}, r"threshold: must name one policy"),
    ({"threshold": True}, r"threshold: must be a number strictly between 0 and 1, but got True"),
    ({"calibration": "platt"}, r"calibration: must be one of none, temperature, but got 'platt'"),
    ({"probes": {"center": 1.0}}, r"probes\.center: must be a fraction of the image side in \(0, 1\), but got 1\.0"),
    ({"probes": {"border": 0.3}}, r"probes\.border: must be at most \(1 - center\) / 2 = 0\.25 so the border band"),
    ({"probes": {"centre": 0.5}}, r"probes\.centre: unknown key 'centre' .*did you mean 'center'"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_STUDIES)
def test_bad_studies_name_file_key_and_value(folder: Path, changes: dict, message: str) -> None:
    path = study_file(folder, **changes)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + message):
        load_study(path)


@pytest.mark.parametrize("key", ["class_weights", "deterministic", "tensorboard", "keep_checkpoints",
                                 "mixed_precision", "jit_compile"])
def test_bool_fields_refuse_non_bools(folder: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"study\.yaml: {key}: must be true or false, but got 'yes please'"):
        load_study(study_file(folder, **{key: "yes please"}))


def test_resnet_weights_checks(folder: Path) -> None:
    write(folder, "head.yaml", {"family": "resnet50v2_head", "hyperparameters": {}})
    missing = study_file(folder, family="resnet50v2_head", search_space="head.yaml", weights="gone.weights.h5")
    with pytest.raises(ConfigError, match=rf"weights: weights file not found: {re.escape(str(folder / 'gone.weights.h5'))}"):
        load_study(missing)
    wrong = study_file(folder, family="resnet50v2_head", search_space="head.yaml", weights="weights.pt")
    with pytest.raises(ConfigError, match=r"weights: a weights file must end with \.weights\.h5"):
        load_study(wrong)
    standardized = study_file(folder, family="resnet50v2_head", search_space="head.yaml", normalization="dataset")
    with pytest.raises(ConfigError, match=r"normalization: must be fixed with pretrained ResNet50V2 weights"):
        load_study(standardized)
    scratch = load_study(study_file(folder, family="resnet50v2_head", search_space="head.yaml", weights=None,
                                    normalization="dataset"))
    assert scratch.weights == "none" and scratch.normalization == "dataset"


def test_bad_study_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"study file not found: .*absent\.yaml"):
        load_study(tmp_path / "absent.yaml")
    broken = write(tmp_path, "broken.yaml", "name: x\noracle: {type: random\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML at line 3"):
        load_study(broken)
    with pytest.raises(ConfigError, match=r"<mapping>: must be a mapping"):
        parse_study(["name"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- overrides
def test_overrides_from_strings_and_mappings(folder: Path) -> None:
    path = study_file(folder, augmentation=False)
    study = load_study(path, overrides=["oracle.max_trials=7", "image_size=32", "early_stopping.patience=2",
                                        "finetune.learning_rate=1e-4", "augmentation.rotation=5", "seed=1"])
    assert study.oracle.max_trials == 7 and study.image_size == (32, 32) and study.early_stopping.patience == 2
    assert study.finetune.learning_rate == 1e-4 and study.seed == 1
    assert study.augmentation == Augmentation(rotation=5, shift=0.0, zoom=0.0)
    assert load_study(path, overrides={"oracle.epochs": 9, "objective": "val_accuracy"}).oracle.epochs == 9
    swapped = load_study(path, overrides=["oracle={type: hyperband, max_epochs: 3}"])
    assert swapped.oracle == OracleConfig(type="hyperband", max_epochs=3)
    assert yaml.safe_load(path.read_text())["oracle"]["max_trials"] == 4  # the file is untouched


def test_probes_regions_default_and_override(folder: Path) -> None:
    path = study_file(folder)
    assert load_study(path).probes == ProbesConfig(center=0.5, border=0.1)
    study = load_study(path, overrides=["probes.center=0.6", "probes.border=0.2"])
    assert study.probes == ProbesConfig(center=0.6, border=0.2)
    assert study.to_dict()["probes"] == {"center": 0.6, "border": 0.2}
    assert "probes" in AFTER_SEARCH  # a later-stage setting: `hpstudy probe --set probes.center=...` is allowed


@pytest.mark.parametrize(("override", "message"), [
    ("oracle.max_trial=3", r"override 'oracle\.max_trial=3': unknown key 'max_trial'; valid keys in oracle: type, max_epochs"),
    ("budget=3", r"override 'budget=3': unknown key 'budget'; valid keys: name, data, family"),
    ("seed.value=3", r"override 'seed\.value=3': unknown key 'value'; seed has no sub-keys"),
    ("oracle.max_trials", r"override 'oracle\.max_trials' must look like KEY=VALUE"),
    ("oracle.max_trials=0", r"oracle\.max_trials: must be >= 1, but got 0"),
    ("oracle.max_epochs=3", r"oracle\.max_epochs: unknown key 'max_epochs' in the random oracle"),
])
def test_bad_overrides(folder: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"study\.yaml: " + message):
        load_study(study_file(folder), overrides=[override])


# --------------------------------------------------------------------------- differences
def test_diff_configs_lists_every_differing_leaf() -> None:
    old = {"name": "a", "oracle": {"type": "random", "max_trials": 10}, "image_size": [64, 64], "tensorboard": False,
           "removed": 1, "flag": 1}
    new = {"name": "a", "oracle": {"type": "random", "max_trials": 20, "epochs": 3}, "image_size": (64, 64),
           "tensorboard": True, "added": None, "flag": True}
    assert diff_configs(old, new) == [
        "oracle.max_trials: 10 -> 20", "oracle.epochs: (absent) -> 3", "tensorboard: false -> true",
        "removed: 1 -> (absent)", "flag: 1 -> true", "added: (absent) -> null"]
    assert diff_configs(new, new) == []


def test_diff_of_two_studies(folder: Path) -> None:
    path = study_file(folder)
    old, new = load_study(path).to_dict(), load_study(path, overrides=["oracle.max_trials=8", "image_size=64"]).to_dict()
    assert diff_configs(old, new) == ["oracle.max_trials: 4 -> 8", "image_size: [128, 128] -> [64, 64]"]


# --------------------------------------------------------------------------- properties
@st.composite
def valid_ranges(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["float", "int"]))
    log = draw(st.booleans())
    if kind == "float":
        low = draw(st.floats(1e-8, 1e3) if log else st.floats(0.0, 1e3))
        high = draw(st.floats(low, max(low * 1e4, low + 1.0)))
        step = None if log or draw(st.booleans()) else draw(st.floats(1e-3, 10.0))
    else:
        low = draw(st.integers(1 if log else 0, 1000))
        high = draw(st.integers(low, low + 5000))
        step = None if log or draw(st.booleans()) else draw(st.integers(1, 50))
    spec: dict[str, Any] = {"type": kind, "low": low, "high": high, "log": log}
    if step is not None:
        spec["step"] = step
        k = draw(st.integers(0, int((high - low) // step)))
        spec["default"] = min(low + k * step, high)
    elif draw(st.booleans()):
        fraction = draw(st.floats(0.0, 1.0))
        value = min(max(low + fraction * (high - low), low), high)
        spec["default"] = round(value) if kind == "int" else value
        spec["default"] = min(max(spec["default"], low), high)
    return spec


@settings(max_examples=50, deadline=None)
@given(valid_ranges())
def test_valid_ranges_load_and_round_trip(spec: dict[str, Any]) -> None:
    name = "l2" if spec["type"] == "float" else "n_dense"
    space = parse_search_space({"family": "baseline_cnn", "hyperparameters": {name: spec}})
    param = space[name]
    assert param.low <= param.default <= param.high and param.log == spec["log"]
    assert parse_search_space(space.to_dict()) == space
    assert parse_search_space(yaml.safe_load(yaml.safe_dump(space.to_dict()))) == space


JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.floats())


@st.composite
def invalid_ranges(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["float", "int"]))
    number = st.floats(-1e6, 1e6) if kind == "float" else st.integers(-10**6, 10**6)
    flaw = draw(st.sampled_from(["low>high", "log", "junk"]))
    if flaw == "low>high":
        high = draw(number)
        return {"type": kind, "low": high + draw(st.integers(1, 100)), "high": high}
    if flaw == "log":
        low = draw(st.floats(-1e6, 0.0) if kind == "float" else st.integers(-10**6, 0))
        return {"type": kind, "low": low, "high": abs(low) + 1, "log": True}
    key = draw(st.sampled_from(["low", "high", "step", "default", "log"]))
    junk = draw(JUNK.filter(lambda v: _is_junk(v, key)))
    spec = {"type": kind, "low": 0, "high": 1, key: junk}
    if key == "log" and isinstance(junk, bool):
        spec["log"] = True  # log with low = 0
    return spec


def _is_junk(value: Any, key: str) -> bool:
    """True when ``value`` is invalid for ``key`` (None means "absent" for step and default)."""
    if key == "log" or value is None:
        return key in ("low", "high", "log")
    if isinstance(value, str):
        try:
            return not math.isfinite(float(value))
        except ValueError:
            return True
    return isinstance(value, (bool, list, dict)) or not math.isfinite(value)


@settings(max_examples=50, deadline=None)
@given(invalid_ranges(), st.sampled_from(["l2", "n_dense", "learning_rate"]))
def test_invalid_ranges_always_raise_config_error(spec: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=rf"<mapping>: hyperparameters\.{name}"):
        parse_search_space({"family": "baseline_cnn", "hyperparameters": {name: spec}})


def test_search_space_objects_validate_on_construction() -> None:
    with pytest.raises(ConfigError, match=r"hyperparameters\.x: `low <= high` must hold, but got low=2, high=1"):
        HyperParam("x", "int", low=2, high=1)
    with pytest.raises(ConfigError, match=r"family: unknown model family 'vit'"):
        SearchSpace("vit", ())
    with pytest.raises(ConfigError, match=r"hyperparameters\.dropout: declared more than once"):
        SearchSpace("baseline_cnn", (HyperParam("dropout", "float", low=0.0, high=0.5),) * 2)


# --------------------------------------------------------------------------- operating point and calibration
@pytest.mark.parametrize(("value", "policy", "target", "yaml_form"), [
    (None, "fixed", 0.5, 0.5), (0.3, "fixed", 0.3, 0.3), ("0.4", "fixed", 0.4, 0.4),
    ("youden", "youden", None, "youden"), ({"sensitivity": 0.95}, "sensitivity", 0.95, {"sensitivity": 0.95}),
    ({"specificity": "0.9"}, "specificity", 0.9, {"specificity": 0.9}),
])
def test_threshold_policies_read_and_round_trip(folder: Path, value: Any, policy: str, target: float | None,
                                                yaml_form: Any) -> None:
    study = load_study(study_file(folder, **({} if value is None else {"threshold": value})))
    assert (study.threshold.policy, study.threshold.target) == (policy, target)
    assert study.threshold.needs_predictions == (policy != "fixed") and study.calibration == "none"
    document = study.to_dict()
    assert document["threshold"] == yaml_form and yaml.safe_load(yaml.safe_dump(document)) == document
    assert parse_study({**study_data(), "threshold": document["threshold"]}, source=folder / "s.yaml").threshold \
        == study.threshold


def test_threshold_and_calibration_overrides(folder: Path) -> None:
    path = study_file(folder, threshold={"specificity": 0.9})
    study = load_study(path, overrides=["threshold.sensitivity=0.8", "calibration=temperature"])
    assert (study.threshold.policy, study.threshold.target, study.calibration) == ("sensitivity", 0.8, "temperature")
    assert load_study(path, overrides=["threshold=youden"]).threshold.policy == "youden"
    with pytest.raises(ConfigError, match=r"override 'threshold\.ppv=0\.9': unknown key 'ppv'; valid keys in "
                                          r"threshold: sensitivity, specificity"):
        load_study(path, overrides=["threshold.ppv=0.9"])


def test_threshold_and_calibration_may_change_after_the_search(folder: Path) -> None:
    from hpstudy.config import stage_config
    from hpstudy.paths import StudyPaths
    from hpstudy.records import write_frozen

    path = study_file(folder)
    frozen = load_study(path).to_dict()
    del frozen["threshold"], frozen["calibration"]  # a study searched before these keys existed
    write_frozen(StudyPaths(folder / "s1"), {"config": frozen, "seed": 42, "data_fingerprint": None})
    config = stage_config(path, stage="finalize", overrides=["threshold={sensitivity: 0.95}", "calibration=temperature"])
    assert (config.threshold.policy, config.threshold.target, config.calibration) == ("sensitivity", 0.95, "temperature")
    assert stage_config(path, stage="finalize").threshold.policy == "fixed"
    from hpstudy.errors import StudyError

    with pytest.raises(StudyError, match=r"finalize: the settings given would differ .*seed: 42 -> 5"):
        stage_config(path, stage="finalize", overrides=["seed=5", "threshold=youden"])
