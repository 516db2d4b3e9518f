"""Cross-split leak detection on a copy of the real sample with planted duplicates."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hpstudy.data.discover import DataSource, discover, read_image
from hpstudy.data.leak import (
    DEFAULT_NEAR_THRESHOLD,
    LEAK_COLUMNS,
    LeakWarning,
    average_hash,
    check_external_leaks,
    check_leaks,
    find_external_leaks,
    find_leaks,
    perceptual_hash,
)
from hpstudy.errors import ConfigError, LeakError

EXACT = ("train/covid/COVID-1031.png", "test/covid/planted_exact.png")
NEAR = ("train/normal/", "val/normal/planted_near.jpg")


def resized_jpeg(image: np.ndarray, size: int = 200) -> bytes:
    resized = tf.cast(tf.round(tf.image.resize(image, (size, size), antialias=True)), tf.uint8)
    return bytes(tf.io.encode_jpeg(resized, quality=75).numpy())


@pytest.fixture(scope="module")
def leaky(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> DataSource:
    """A copy of the sample with one exact train->test copy and one resized JPEG train->val copy."""
    root = tmp_path_factory.mktemp("leaky") / "data"
    shutil.copytree(sample_data, root)
    shutil.copy(root / EXACT[0], root / EXACT[1])
    original = sorted((root / NEAR[0]).glob("*.png"))[3]
    (root / NEAR[1]).write_bytes(resized_jpeg(read_image(original)))
    return discover(root)


def near_original(source: DataSource) -> str:
    return sorted((source.root / NEAR[0]).glob("*.png"))[3].relative_to(source.root).as_posix()


def test_planted_exact_and_near_duplicates_are_found(leaky: DataSource) -> None:
    leaks = find_leaks(leaky)
    assert list(leaks.columns) == LEAK_COLUMNS and len(leaks) == 2
    exact, near = leaks.to_dict("records")
    assert exact == {"kind": "exact", "split_a": "train", "path_a": EXACT[0], "split_b": "test",
                     "path_b": EXACT[1], "distance": 0}
    assert (near["kind"], near["split_a"], near["path_a"], near["split_b"], near["path_b"]) == (
        "near", "train", near_original(leaky), "val", NEAR[1])
    assert 0 <= near["distance"] <= DEFAULT_NEAR_THRESHOLD


def test_splits_argument_leaves_other_splits_out(leaky: DataSource) -> None:
    leaks = find_leaks(leaky, splits=("train", "val"))
    assert leaks["kind"].tolist() == ["near"]


def test_the_real_sample_has_no_leaks(sample_data: Path) -> None:
    leaks = find_leaks(discover(sample_data, verify=False))
    assert leaks.empty and list(leaks.columns) == LEAK_COLUMNS


def test_warn_writes_the_csv_and_warns(leaky: DataSource, tmp_path: Path) -> None:
    out = tmp_path / "run" / "leaks.csv"
    with pytest.warns(LeakWarning, match=r"2 image pair\(s\) appear in more than one split \(1 byte-identical, "
                                         r"1 near-identical\).*leaks\.csv"):
        leaks = check_leaks(leaky, out_csv=out)
    pd.testing.assert_frame_equal(pd.read_csv(out), leaks)


def test_reuse_reads_the_pairs_of_the_earlier_check_and_still_reports_them(leaky: DataSource, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "leaks.csv"
    with pytest.warns(LeakWarning):
        first = check_leaks(leaky, out_csv=out)
    monkeypatch.setattr("hpstudy.data.leak.find_leaks", lambda *a, **k: pytest.fail("reuse must not look again"))
    with pytest.warns(LeakWarning, match=r"2 image pair\(s\)"):
        again = check_leaks(leaky, out_csv=out, reuse=True)
    pd.testing.assert_frame_equal(again, first)
    with pytest.raises(LeakError, match=r"2 image pair\(s\)"):
        check_leaks(leaky, severity="error", out_csv=out, reuse=True)
    monkeypatch.undo()
    out.write_text("not,a,leak,table\n")  # unreadable as one: looked for again
    with pytest.warns(LeakWarning):
        pd.testing.assert_frame_equal(check_leaks(leaky, out_csv=out, reuse=True), first)


def test_error_raises_with_the_pairs(leaky: DataSource) -> None:
    with pytest.raises(LeakError, match=rf"2 image pair\(s\).*{EXACT[0]} = {EXACT[1]}.*planted_near\.jpg"):
        check_leaks(leaky, severity="error")


def test_off_does_nothing(leaky: DataSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hpstudy.data.leak.find_leaks", lambda *a, **k: pytest.fail("off must not look"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        leaks = check_leaks(leaky, severity="off", out_csv=tmp_path / "leaks.csv")
    assert leaks.empty and list(leaks.columns) == LEAK_COLUMNS
    assert not (tmp_path / "leaks.csv").exists()


def test_clean_data_writes_a_header_only_csv_without_warning(sample_data: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        leaks = check_leaks(discover(sample_data, verify=False), severity="error", out_csv=tmp_path / "l.csv")
    assert leaks.empty
    assert (tmp_path / "l.csv").read_text() == ",".join(LEAK_COLUMNS) + "\n"


def test_unknown_severity_and_bad_threshold(leaky: DataSource) -> None:
    with pytest.raises(ConfigError, match=r"leak_check must be one of warn, error, off, but got 'loud'"):
        check_leaks(leaky, severity="loud")
    with pytest.raises(ConfigError, match=r"near_threshold must be an integer >= 0"):
        find_leaks(leaky, near_threshold=-1)


def test_perceptual_hash_survives_reencoding_but_separates_images(sample_data: Path) -> None:
    paths = sorted((sample_data / "train/covid").glob("*.png"))[:2]
    first, second = (read_image(p) for p in paths)
    base = perceptual_hash(first)
    assert base.bit_length() <= 256
    reencoded = tf.io.decode_jpeg(resized_jpeg(first, 300)).numpy()
    as_16bit_gray = (tf.image.rgb_to_grayscale(tf.cast(first, tf.float32)).numpy() * 257).astype(np.uint16)
    assert (base ^ perceptual_hash(reencoded)).bit_count() <= DEFAULT_NEAR_THRESHOLD
    assert (base ^ perceptual_hash(as_16bit_gray)).bit_count() <= 2
    assert (base ^ perceptual_hash(second)).bit_count() > 2 * DEFAULT_NEAR_THRESHOLD


def test_average_hash_is_64_bits_and_deterministic(sample_data: Path) -> None:
    image = read_image(sorted((sample_data / "val/normal").glob("*.png"))[0])
    assert average_hash(image) == average_hash(image.copy()) and average_hash(image).bit_length() <= 64


def test_external_leaks_pair_the_study_with_the_external_set(leaky: DataSource, sample_data: Path,
                                                             tmp_path: Path) -> None:
    from hpstudy.data.discover import discover_external

    ext = tmp_path / "ext"
    shutil.copytree(sample_data / "test", ext)  # the study's own test images, renamed to an external set
    train_image = sorted((leaky.root / "train" / "normal").glob("*.png"))[0]
    shutil.copy(train_image, ext / "normal" / "from_train.png")
    external = discover_external(ext, class_names=leaky.class_names, positive_class=leaky.positive_class)
    leaks = find_external_leaks(leaky, external, name="hospital")
    assert list(leaks.columns) == LEAK_COLUMNS and set(leaks["kind"]) == {"exact"}
    assert set(leaks["split_b"]) == {"hospital"} and set(leaks["split_a"]) == {"train", "test"}
    study_test = {p.relative_to(leaky.root).as_posix() for p in (leaky.root / "test").glob("*/*.png")}
    assert study_test - {"test/covid/planted_exact.png"} <= set(leaks["path_a"])
    assert ("train", "normal/from_train.png") in set(zip(leaks["split_a"], leaks["path_b"]))
    with pytest.warns(LeakWarning, match=r"are shared between the study's splits and the external set 'hospital'"):
        check_external_leaks(leaky, external, name="hospital", out_csv=tmp_path / "pairs.csv")
    assert len(pd.read_csv(tmp_path / "pairs.csv")) == len(leaks)
    with pytest.raises(LeakError, match="remove them from the external set"):
        check_external_leaks(leaky, external, name="hospital", severity="error")
    assert check_external_leaks(leaky, external, name="hospital", severity="off").empty
