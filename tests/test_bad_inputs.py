"""Bad inputs through the command line: data, YAML, CLI arguments and model files.

Every case runs ``hpstudy`` (in process, through ``hpstudy.cli.main``; a few as a subprocess) and checks
three things: the exit code is not 0, the one-line message names the culprit (file, key or value), and
the artefacts of an existing study are byte-identical afterwards. The library-level checks of the same
loaders live in ``test_config.py`` and ``test_discover.py``; their hypothesis strategies are reused here
to drive the command line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpstudy.cli import main
from tests.test_config import invalid_ranges
from tests.test_discover import make_tree, tiny_png, trees
from tests.test_study import TINY_SPACE, write_study

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- helpers
def snapshot(folder: Path) -> dict[str, str]:
    """SHA-1 of every file under ``folder`` (relative path -> digest), but the lock (it names its holder)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def fails(argv: list[str], capsys: pytest.CaptureFixture, *culprits: str, code: int = 1) -> str:
    """Run the CLI in process; it must exit with ``code`` and print one error naming every culprit."""
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0] if err.strip() else ""
    assert first.startswith(f"hpstudy {argv[0]}: error:"), err
    assert "Traceback" not in err
    for culprit in culprits:
        assert culprit in err, f"{culprit!r} not named in: {err}"
    return err


@pytest.fixture(scope="module")
def finished(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A searched and finalized tiny study (folder with base.yaml, space.yaml and the run directory base/)."""
    folder = tmp_path_factory.mktemp("finished")
    study_yaml = write_study(folder, "base", sample_data, {"type": "random", "max_trials": 1, "epochs": 1})
    assert main(["search", str(study_yaml)]) == 0
    assert main(["finalize", str(study_yaml)]) == 0
    return folder


@pytest.fixture
def study(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished study; returns its YAML (the run directory is beside it)."""
    copy = tmp_path / "studies"
    shutil.copytree(finished, copy, symlinks=True)
    return copy / "base.yaml"


def run_dir(study_yaml: Path) -> Path:
    return study_yaml.parent / "base"


def edit_yaml(path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_tree(root: Path, classes: tuple[str, ...] = ("covid", "normal"), n: int = 2) -> Path:
    """Valid PNGs (distinct content per file) under root/{split}/{class}/."""
    for s_index, split in enumerate(SPLITS):
        for c_index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"img{i}.png").write_bytes(tiny_png(60 * s_index + 20 * c_index + i))
    return root


def encode(image: np.ndarray, kind: str = "png") -> bytes:
    import tensorflow as tf

    encoder = tf.io.encode_png if kind == "png" else tf.io.encode_jpeg
    return bytes(encoder(image).numpy())


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize(("name", "content", "message"), [
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"IEND\xaeB`\x82", "corrupt PNG data"),
    ("text.png", b"this is not a picture", "not an image: content is not PNG or JPEG"),
    ("empty.png", b"", "empty file (0 bytes)"),
    ("half.jpg", None, "truncated JPEG"),
], ids=["corrupt-png", "not-an-image", "zero-byte", "truncated-jpeg"])
def test_unreadable_images_are_named_and_the_study_is_untouched(study: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture, name: str,
                                                                content: bytes | None, message: str) -> None:
    data = tiny_tree(tmp_path / "data")
    if content is None:
        whole = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 1), dtype=np.uint8), "jpeg")
        content = whole[: len(whole) // 2]
    (data / "train" / "covid" / name).write_bytes(content)
    before = snapshot(run_dir(study))
    fails(["search", str(study), "--data", str(data)], capsys, f"train/covid/{name}", message)
    assert snapshot(run_dir(study)) == before


def test_rgba_16_bit_and_jpeg_images_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tiny_tree(tmp_path / "data")
    rng = np.random.default_rng(1)
    (data / "train" / "covid" / "rgba.png").write_bytes(encode(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)))
    (data / "train" / "normal" / "wide.png").write_bytes(encode(rng.integers(0, 65535, (20, 50, 1),
                                                                             dtype=np.uint16)))
    (data / "val" / "covid" / "photo.jpg").write_bytes(encode(rng.integers(0, 255, (33, 33, 3), dtype=np.uint8),
                                                             "jpeg"))
    assert main(["explore", str(data), "--out", str(tmp_path / "explore"), "--image-size", "32"]) == 0
    assert "Exploration written to" in capsys.readouterr().out


@pytest.mark.parametrize(("make", "culprits"), [
    (lambda root: (tiny_tree(root), shutil.rmtree(root / "val" / "normal"), tiny_tree(root / "x", ("viral",)),
                   shutil.move(root / "x" / "val" / "viral", root / "val" / "viral")),
     ["class folders differ between splits", "val/: covid, viral", "train/: covid, normal"]),
    (lambda root: (tiny_tree(root), shutil.rmtree(root / "test"), (root / "test").mkdir()),
     ["split folder", "test has no images"]),
    (lambda root: tiny_tree(root, ("covid",)), ["only one class folder (covid/)"]),
    (lambda root: (tiny_tree(root), shutil.rmtree(root / "val")), ["missing split folder(s) val/"]),
    (lambda root: None, ["does not exist"]),
], ids=["classes-differ", "empty-split", "one-class", "missing-split", "no-folder"])
def test_bad_layouts_are_named(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture, make: Any,
                               culprits: list[str]) -> None:
    root = tmp_path / "data"
    make(root)
    shutil.rmtree(root / "x", ignore_errors=True)
    before = snapshot(run_dir(study))
    fails(["search", str(study), "--data", str(root)], capsys, str(root), *culprits)
    assert snapshot(run_dir(study)) == before


def test_zip_without_splits(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "covid_xray.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("images/covid/a.png", tiny_png(1))
        handle.writestr("images/normal/b.png", tiny_png(2))
    fails(["search", str(study), "--data", str(archive)], capsys, str(archive),
          "missing split folder(s) train/, val/, test/", "found images/")


# --------------------------------------------------------------------------- study and search-space YAML
@pytest.mark.parametrize(("changes", "culprits"), [
    ({"oracle": {"type": "genetic", "max_trials": 2}}, ["oracle.type", "hyperband, random, bayesian", "'genetic'"]),
    ({"early_stopping__patience": -1}, ["early_stopping.patience", "-1"]),
    ({"oracle": {"type": "hyperband", "max_epochs": 0}}, ["oracle.max_epochs", "must be >= 1", "0"]),
    ({"oracle": {"type": "random", "max_trials": 2, "epochs": 0}}, ["oracle.epochs", "0"]),
    ({"image_size": [16, 16]}, ["image_size", ">= 32 px"]),
    ({"objective": {"name": "loss"}}, ["objective", "val_<metric>"]),
    ({"name": "../escape"}, ["name", "safe folder name", "'../escape'"]),
    ({"colour": "blue"}, ["unknown key 'colour'", "valid keys"]),
])
def test_bad_study_settings_name_file_key_and_value(study: Path, capsys: pytest.CaptureFixture,
                                                    changes: dict, culprits: list[str]) -> None:
    before = snapshot(study.parent)
    edit_yaml(study, **changes)
    before[study.name] = hashlib.sha1(study.read_bytes()).hexdigest()
    fails(["search", str(study)], capsys, str(study), *culprits)
    assert snapshot(study.parent) == before


@pytest.mark.parametrize(("spec", "culprits"), [
    ({"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}, ["hyperparameters.learning_rate",
                                                                      "`low <= high`", "low=0.1, high=0.01"]),
    ({"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
     ["hyperparameters.learning_rate.low", "`low > 0` must hold for log sampling", "low=0.0"]),
    ({"learning_rate": {"type": "float", "low": -1e-3, "high": 0.1, "log": True}}, ["low=-0.001"]),
    ({"width_multiplier": {"type": "float", "low": 0.5, "high": 2}},
     ["hyperparameters.width_multiplier", "not a hyperparameter of family 'baseline_cnn'", "valid names"]),
    ({"batch_size": {"type": "choice", "values": []}}, ["hyperparameters.batch_size.values", "non-empty list"]),
])
def test_bad_search_spaces_name_file_key_and_value(study: Path, capsys: pytest.CaptureFixture, spec: dict,
                                                   culprits: list[str]) -> None:
    space = study.parent / "space.yaml"
    before = snapshot(run_dir(study))
    space.write_text(yaml.safe_dump({**TINY_SPACE, "hyperparameters": {**TINY_SPACE["hyperparameters"], **spec}}))
    fails(["search", str(study)], capsys, str(space), *culprits)
    assert snapshot(run_dir(study)) == before


def test_yaml_syntax_errors_name_the_line(study: Path, capsys: pytest.CaptureFixture) -> None:
    study.write_text(study.read_text() + "oracle: {type: random\n")
    fails(["search", str(study)], capsys, str(study), "invalid YAML at line")
    fails(["search", str(study.parent / "missing.yaml")], capsys, "study file not found", "missing.yaml")


def test_changed_configuration_on_resume_is_refused_and_nothing_is_rewritten(study: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    before = snapshot(run_dir(study))
    edit_yaml(study, seed=4, augmentation={"rotation": 10})
    fails(["search", str(study)], capsys, "changed since", "study.yaml", "seed: 3 -> 4",
                "augmentation.rotation: 5", "--overwrite")
    assert snapshot(run_dir(study)) == before
    edit_yaml(study, seed=3, augmentation={"rotation": 5, "shift": 0.05, "zoom": 0.05})
    fails(["search", str(study), "--set", "normalization=fixed"], capsys, "normalization: dataset -> fixed")
    assert snapshot(run_dir(study)) == before


def test_damaged_study_files_are_named_not_tracebacks(study: Path, capsys: pytest.CaptureFixture) -> None:
    folder = run_dir(study)
    good = (folder / "trials.csv").read_bytes()
    (folder / "trials.csv").write_text('trial_id,status\n"unterminated\n')
    fails(["status", str(study)], capsys, str(folder / "trials.csv"), "hpstudy export")
    (folder / "trials.csv").write_bytes(good)
    (folder / "study.json").write_text("{not json")
    fails(["status", str(study)], capsys, str(folder / "study.json"), "delete it")
    (folder / "study.json").unlink()
    (folder / "study.yaml").write_text("config: [unclosed\n")
    fails(["search", str(study)], capsys, str(folder / "study.yaml"), "not valid YAML", "--overwrite")


# --------------------------------------------------------------------------- command line
@pytest.mark.parametrize(("argv", "culprits"), [
    (["--set", "oracle.max_trails=5"], ["oracle.max_trails=5", "unknown key 'max_trails'", "max_trials"]),
    (["--set", "max_trials"], ["'max_trials' must look like KEY=VALUE"]),
    (["--set", "seed=-3"], ["seed", "must be >= 0", "-3"]),
    (["--set", "oracle.max_trials=[1"], ["oracle.max_trials=[1", "not valid YAML"]),
    (["--listen", "nowhere"], ["--listen must look like HOST:PORT", "'nowhere'"]),
])
def test_bad_command_line_values(study: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                 culprits: list[str]) -> None:
    before = snapshot(study.parent)
    fails(["search", str(study), *argv], capsys, *culprits)
    assert snapshot(study.parent) == before


@pytest.mark.parametrize(("setting", "culprits"), [
    ("threshold=1.5", ["threshold: must be strictly between 0 and 1, but got 1.5", "youden", "{sensitivity: t}"]),
    ("threshold={sensitivity: 0}", ["threshold.sensitivity: must be strictly between 0 and 1, but got 0"]),
    ("threshold=median", ["threshold: unknown policy 'median'", "youden", "{specificity: t}"]),
    ("threshold.ppv=0.9", ["unknown key 'ppv'", "valid keys in threshold: sensitivity, specificity"]),
    ("calibration=platt", ["calibration: must be one of none, temperature, but got 'platt'"]),
])
def test_bad_threshold_and_calibration_settings(study: Path, capsys: pytest.CaptureFixture, setting: str,
                                                culprits: list[str]) -> None:
    before = snapshot(study.parent)
    fails(["finalize", str(study), "--set", setting], capsys, *culprits)
    assert snapshot(study.parent) == before


def test_a_threshold_without_validation_predictions_stops_before_training(study: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    for checkpoint in run_dir(study).glob("tuner/trial_*/checkpoint.weights.h5"):
        checkpoint.unlink()  # a study searched before the best trials kept their checkpoint
    before = snapshot(study.parent)
    fails(["finalize", str(study), "--set", "threshold=youden"], capsys, "neither re-evaluation predictions",
          "checkpoint.weights.h5", "hpstudy confirm", "--set threshold=0.5 --set calibration=none")
    assert snapshot(study.parent) == before


@pytest.mark.parametrize("argv", [["searhc", "x.yaml"], ["search"], ["search", "x.yaml", "--workers", "-1"],
                                  ["search", "x.yaml", "--verbose", "3"], ["evaluate", "x.yaml", "--model", "best"]])
def test_usage_errors_exit_2_with_argparse_message(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "usage: hpstudy" in err and "error:" in err and "Traceback" not in err


def test_subprocess_errors_are_one_line_with_exit_code_1(study: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hpstudy.cli", "search", str(study), "--data",
                             str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"^hpstudy search: error: data path .*nowhere does not exist", result.stderr, re.M)
    result = subprocess.run([sys.executable, "-m", "hpstudy.cli", "finalize", str(tmp_path / "none.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "study file not found" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- model files
def test_missing_weights_file_is_named(study: Path, capsys: pytest.CaptureFixture) -> None:
    (study.parent / "head.yaml").write_text(yaml.safe_dump({"family": "resnet50v2_head", "hyperparameters": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    edit_yaml(study, family="resnet50v2_head", search_space="head.yaml", weights="imagenet_notop.weights.h5",
              normalization="fixed")
    fails(["search", str(study)], capsys, "weights", "weights file not found",
          str(study.parent / "imagenet_notop.weights.h5"))
    edit_yaml(study, weights="resnet.pth")
    fails(["search", str(study)], capsys, "weights", "must end with", "resnet.pth")


def test_evaluate_before_finalize(study: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(run_dir(study) / "final")
    before = snapshot(run_dir(study))
    fails(["evaluate", str(study)], capsys, "no final model", "final/model.keras", "run `hpstudy finalize` first")
    fails(["gradcam", str(study)], capsys, "test_ledger.jsonl", "run `hpstudy evaluate` first")
    assert snapshot(run_dir(study)) == before


def test_model_file_from_another_study_or_without_a_record_is_refused(study: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import keras

    final = run_dir(study) / "final"
    stranger = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    stranger.save(final / "model.keras")
    before = snapshot(run_dir(study))
    fails(["evaluate", str(study)], capsys, str(final / "model.keras"), "not the model this study saved",
          "another study")
    (final / "best_config.json").unlink()
    fails(["evaluate", str(study)], capsys, str(final / "model.keras"), "no SHA-256 recorded", "best_config.json")
    (final / "model.keras").write_bytes(b"not a zip")
    fails(["evaluate", str(study)], capsys, "no SHA-256 recorded")
    assert not (run_dir(study) / "evaluation").exists(), "the test split was opened for a refused model"
    assert {k: v for k, v in snapshot(run_dir(study)).items() if not k.startswith("final/")} == \
        {k: v for k, v in before.items() if not k.startswith("final/")}


def test_the_test_set_is_evaluated_once(study: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(study)]) == 0
    ledger = run_dir(study) / "evaluation" / "test_ledger.jsonl"
    statuses = [json.loads(line)["status"] for line in ledger.read_text().splitlines()]
    assert statuses == ["started", "completed"]  # 'started' is written before the model sees the test images
    before = snapshot(run_dir(study))
    fails(["evaluate", str(study)], capsys, "already evaluated on the test split", "--force", str(ledger))
    assert snapshot(run_dir(study)) == before
    assert main(["evaluate", str(study), "--force"]) == 0
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(e["status"], e["forced"]) for e in entries] == [("started", False), ("completed", False),
                                                             ("started", True), ("completed", True)]


def test_finalize_before_search(study: Path, capsys: pytest.CaptureFixture) -> None:
    edit_yaml(study, name="fresh")
    fails(["finalize", str(study)], capsys, "has not been searched yet", "fresh/study.yaml", "run `hpstudy search")
    fails(["export", str(study)], capsys, "has not been searched yet", "run `hpstudy search")


# --------------------------------------------------------------------------- property-based, through the CLI
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=invalid_ranges(), name=st.sampled_from(["l2", "n_dense", "learning_rate", "dropout"]))
def test_any_invalid_range_stops_the_search_before_it_touches_the_study(study: Path, spec: dict, name: str) -> None:
    space = study.parent / "space.yaml"
    original = space.read_text()
    before = snapshot(run_dir(study))
    space.write_text(yaml.safe_dump({**TINY_SPACE, "hyperparameters": {**TINY_SPACE["hyperparameters"],
                                                                       name: spec}}))
    try:
        err = _run_quietly(["search", str(study)])
    finally:
        space.write_text(original)
    assert err.startswith(f"hpstudy search: error: {study}: search_space: {space}: hyperparameters.{name}"), err
    assert snapshot(run_dir(study)) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees, nested=st.booleans())
def test_no_folder_tree_can_damage_an_existing_study(study: Path, tree: dict[str, dict[str, int]],
                                                     nested: bool) -> None:
    """Random data trees given to an existing study: refused (bad layout, or data that differs), never a crash."""
    before = snapshot(run_dir(study))
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp) / "outer" if nested else Path(tmp), tree)
        root.mkdir(parents=True, exist_ok=True)
        err = _run_quietly(["search", str(study), "--data", tmp])
    assert err.startswith("hpstudy search: error:") and (tmp in err or "data fingerprint" in err), err
    assert snapshot(run_dir(study)) == before


def _run_quietly(argv: list[str]) -> str:
    """The CLI's stderr for a run that must fail with exit code 1 (captured without capsys)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code == 1, err.getvalue()
    return err.getvalue()
