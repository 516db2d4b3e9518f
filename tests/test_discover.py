"""Discovery of data folders and zips: layout rules, positive class, verification, fingerprint."""

from __future__ import annotations

import functools
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from hpstudy.data.discover import SPLITS, TRAINING_SPLITS, DataSource, discover, read_image, resolve_source
from hpstudy.errors import DataError

CLASSES = ("covid", "normal")


@functools.cache
def tiny_png(value: int = 0) -> bytes:
    """A valid 4x4 grayscale PNG."""
    return bytes(tf.io.encode_png(np.full((4, 4, 1), value, dtype=np.uint8)).numpy())


def make_tree(root: Path, classes: dict[str, dict[str, int]]) -> Path:
    """Write ``{split: {class: n_images}}`` of tiny PNGs under root."""
    for split, per_class in classes.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for class_name, n in per_class.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"img{i}.png").write_bytes(tiny_png(i))
    return root


def full_tree(root: Path, classes: tuple[str, ...] = CLASSES, n: int = 2) -> Path:
    return make_tree(root, {s: {c: n for c in classes} for s in SPLITS})


def copy_sample(sample: Path, dest: Path, per_class: int = 2) -> Path:
    """Copy the first ``per_class`` real images of each split/class folder to dest."""
    for split in SPLITS:
        for class_name in CLASSES:
            (dest / split / class_name).mkdir(parents=True)
            for image in sorted((sample / split / class_name).glob("*.png"))[:per_class]:
                shutil.copy(image, dest / split / class_name / image.name)
    return dest


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, prefix + path.relative_to(folder).as_posix())
        handle.writestr("__MACOSX/._junk.png", b"not an image")
    return archive


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- the real sample ------------------------------------------------------------------------

def test_discovers_the_real_sample(sample_data: Path) -> None:
    source = discover(sample_data)
    assert source.class_names == CLASSES and source.positive_class == "covid"
    assert source.root == sample_data.resolve() and source.origin == sample_data.absolute()
    counts = source.counts()
    assert list(counts.columns) == ["split", "class_name", "count"]
    assert counts["count"].tolist() == [40, 40, 10, 10, 10, 10]
    assert [len(source.split(s)) for s in SPLITS] == [80, 20, 20]
    assert all(r.label == (r.class_name == "covid") and r.path.is_absolute() and r.path.is_file()
               for r in source.records)
    keys = [(r.split, r.class_name, str(r.path)) for r in source.records]
    assert keys == sorted(keys)
    assert read_image(source.records[0].path).shape == (224, 224, 3)


def test_zip_at_root_is_extracted_once(sample_data: Path, tmp_path: Path, cache_dir: Path) -> None:
    archive = zip_folder(copy_sample(sample_data, tmp_path / "copy"), tmp_path / "xray.zip")
    source = discover(archive)
    assert source.origin == archive and source.root.parent == cache_dir / "zips"
    assert source.counts()["count"].tolist() == [2] * 6
    again = discover(archive)
    assert again.root == source.root and again.fingerprint() == source.fingerprint()
    assert [p.name for p in (cache_dir / "zips").iterdir()] == [source.root.name]  # no temp folder left


def test_zip_with_one_top_level_folder(sample_data: Path, tmp_path: Path, cache_dir: Path) -> None:
    archive = zip_folder(copy_sample(sample_data, tmp_path / "copy", 1), tmp_path / "x.zip", "covid_xray/")
    source = discover(archive)
    assert source.root.name == "covid_xray" and source.root.parent.parent == cache_dir / "zips"
    assert len(source.records) == 6 and source.positive_class == "covid"


def test_plain_folder_with_one_top_level_folder(tmp_path: Path) -> None:
    full_tree(tmp_path / "download" / "covid_xray")
    assert discover(tmp_path / "download").root == (tmp_path / "download" / "covid_xray").resolve()


def test_corrupt_zip_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(DataError, match=r"broken\.zip is not a readable zip archive"):
        discover(archive)
    assert not any((cache_dir / "zips").iterdir())


def test_missing_path_and_non_zip_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere does not exist: expected a folder or a \.zip"):
        discover(tmp_path / "nowhere")
    (tmp_path / "data.tar").write_bytes(b"x")
    with pytest.raises(DataError, match=r"data\.tar is a file but not a \.zip"):
        discover(tmp_path / "data.tar")


# --- layout errors --------------------------------------------------------------------------

def test_missing_splits_are_all_named(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"covid": 1, "normal": 1}, "validation": {"covid": 1}})
    with pytest.raises(DataError, match=r"missing split folder\(s\) val/, test/.*found train/, validation/"):
        discover(tmp_path)


def test_class_folders_differing_between_splits(tmp_path: Path) -> None:
    full_tree(tmp_path)
    make_tree(tmp_path, {"val": {"viral": 1}})
    pattern = r"class folders differ.*train/: covid, normal; val/: covid, normal, viral; test/: covid, normal"
    with pytest.raises(DataError, match=pattern):
        discover(tmp_path)


def test_empty_class_folders_are_all_named(tmp_path: Path) -> None:
    full_tree(tmp_path)
    for folder in ("test/normal", "val/covid"):
        shutil.rmtree(tmp_path / folder)
        (tmp_path / folder).mkdir()
    (tmp_path / "test/normal/notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder\(s\) with no images.*val/covid/, test/normal/"):
        discover(tmp_path)


def test_empty_split(tmp_path: Path) -> None:
    full_tree(tmp_path)
    shutil.rmtree(tmp_path / "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"split folder .*val has no images: expected one subfolder per class"):
        discover(tmp_path)


def test_one_class_only(tmp_path: Path) -> None:
    full_tree(tmp_path, classes=("covid",))
    with pytest.raises(DataError, match=r"only one class folder \(covid/\)"):
        discover(tmp_path)


def test_images_directly_in_a_split_folder(tmp_path: Path) -> None:
    full_tree(tmp_path)
    (tmp_path / "train" / "stray.png").write_bytes(tiny_png())
    with pytest.raises(DataError, match=r"holds 1 image file\(s\) directly \(stray\.png\)"):
        discover(tmp_path)


# --- files ----------------------------------------------------------------------------------

def test_bad_files_are_all_listed_in_one_error(sample_data: Path, tmp_path: Path) -> None:
    root = copy_sample(sample_data, tmp_path / "data")
    first = sorted((root / "train/covid").glob("*.png"))[0]
    corrupt = bytearray(first.read_bytes())
    corrupt[200:400] = bytes(200)
    (root / "train/covid/corrupt.png").write_bytes(bytes(corrupt))
    jpeg = bytes(tf.io.encode_jpeg(read_image(first)).numpy())
    (root / "val/normal/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "test/covid/empty.png").write_bytes(b"")
    (root / "test/normal/notes.png").write_text("these are my notes, not an image")
    with pytest.raises(DataError, match=r"4 file\(s\) .* are not readable images") as info:
        discover(root)
    message = str(info.value)
    assert "train/covid/corrupt.png: corrupt PNG data" in message
    assert "val/normal/truncated.jpg: truncated JPEG" in message
    assert "test/covid/empty.png: empty file (0 bytes)" in message
    assert "test/normal/notes.png: not an image" in message
    assert len(discover(root, verify=False).records) == 16
    with pytest.raises(DataError, match=r"1 file\(s\)") as partial:
        discover(root, verify=("train",))
    assert "corrupt.png" in str(partial.value) and "empty.png" not in str(partial.value)


def test_images_with_an_already_verified_fingerprint_are_not_decoded_again(sample_data: Path, tmp_path: Path) -> None:
    root = copy_sample(sample_data, tmp_path / "data")
    (root / "train/covid/empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: empty file"):
        resolve_source(root)
    fingerprint = discover(root, verify=False).fingerprint(splits=TRAINING_SPLITS)
    assert len(resolve_source(root, verified_fingerprint=fingerprint).records) == 13, "vouched for: not decoded"
    with pytest.raises(DataError, match="empty.png: empty file"):
        resolve_source(root, verified_fingerprint="0" * 64)  # other bytes than those verified: decoded again


def test_read_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"GIF89a....")
    with pytest.raises(DataError, match=r"scan\.png: not an image"):
        read_image(path)
    with pytest.raises(DataError, match=r"missing\.png: cannot be read"):
        read_image(tmp_path / "missing.png")


def test_system_and_non_image_files_are_ignored(tmp_path: Path) -> None:
    full_tree(tmp_path, n=1)
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "labels.csv", "notes.txt", "meta.json",
                 "README.md", "._img0.png", "scan.dcm"):
        (tmp_path / "train/covid" / name).write_bytes(b"\x00junk")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train/__MACOSX").mkdir()
    (tmp_path / "train/.hidden_class").mkdir()
    source = discover(tmp_path)
    assert [r.path.name for r in source.split("train")] == ["img0.png", "img0.png"]


def test_radiography_database_layout_takes_the_images_folder(tmp_path: Path) -> None:
    """``<class>/images/`` beside ``<class>/masks/`` (COVID-19 Radiography Database): the masks are not images."""
    for split in SPLITS:
        for class_name in CLASSES:
            for sub in ("images", "masks"):
                (tmp_path / split / class_name / sub).mkdir(parents=True)
                (tmp_path / split / class_name / sub / "a.png").write_bytes(tiny_png(3))
    (tmp_path / "train/covid/direct.png").write_bytes(tiny_png(1))  # images of its own: images/ is not read
    source = discover(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in source.split("train")] == [
        "train/covid/direct.png", "train/normal/images/a.png"]
    assert len(source.records) == 6 and not any("masks" in r.path.parts for r in source.records)


def test_rgba_16bit_jpeg_and_other_sizes_are_accepted(tmp_path: Path) -> None:
    full_tree(tmp_path, n=1)
    rgba = np.random.randint(0, 256, (30, 20, 4), dtype=np.uint8)
    gray16 = np.random.randint(0, 65536, (17, 33, 1), dtype=np.uint16)
    (tmp_path / "train/covid/rgba.png").write_bytes(tf.io.encode_png(rgba).numpy())
    (tmp_path / "train/normal/gray16.png").write_bytes(tf.io.encode_png(gray16).numpy())
    (tmp_path / "val/normal/photo.JPEG").write_bytes(tf.io.encode_jpeg(rgba[..., :3]).numpy())
    assert len(discover(tmp_path).records) == 9
    np.testing.assert_array_equal(read_image(tmp_path / "train/covid/rgba.png"), rgba)
    loaded = read_image(tmp_path / "train/normal/gray16.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, gray16)
    assert read_image(tmp_path / "val/normal/photo.JPEG").shape == (30, 20, 3)


# --- positive class -------------------------------------------------------------------------

@pytest.mark.parametrize(("classes", "positive"), [
    (("covid", "normal"), "covid"),
    (("COVID-19", "Normal", "Viral Pneumonia"), "COVID-19"),
    (("covid", "non-covid"), "covid"),
    (("covid_positive", "covid_negative"), "covid_positive"),
    (("lesion", "normal"), "lesion"),
    (("abnormal", "normal"), "abnormal"),
    (("healthy", "pneumonia"), "pneumonia"),
])
def test_positive_class_is_inferred(tmp_path: Path, classes: tuple[str, ...], positive: str) -> None:
    source = discover(full_tree(tmp_path, classes, n=1), verify=False)
    assert source.positive_class == positive and source.class_names == tuple(sorted(classes))
    assert {r.class_name for r in source.records if r.label == 1} == {positive}


@pytest.mark.parametrize("classes", [("cat", "dog"), ("a", "b", "normal"), ("normal", "healthy")])
def test_positive_class_must_be_given_when_ambiguous(tmp_path: Path, classes: tuple[str, ...]) -> None:
    with pytest.raises(DataError, match=rf"cannot tell which class is positive among {', '.join(sorted(classes))}"):
        discover(full_tree(tmp_path, classes, n=1), verify=False)


def test_positive_class_argument(tmp_path: Path) -> None:
    full_tree(tmp_path, ("cat", "dog"), n=1)
    assert discover(tmp_path, positive_class="dog", verify=False).positive_class == "dog"
    with pytest.raises(DataError, match=r"positive_class 'covid' is not one of the classes found in .*: cat, dog"):
        discover(tmp_path, positive_class="covid", verify=False)


# --- fingerprint ----------------------------------------------------------------------------

def test_fingerprint_changes_with_one_byte(sample_data: Path, tmp_path: Path) -> None:
    root = copy_sample(sample_data, tmp_path / "data")
    source = discover(root, verify=False)
    before, before_training = source.fingerprint(), source.fingerprint(splits=("train", "val"))
    assert len(before) == 64 and before == discover(root).fingerprint()
    target = source.split("test")[0].path
    data = bytearray(target.read_bytes())
    data[-20] ^= 1
    target.write_bytes(bytes(data))
    assert source.fingerprint() != before  # read from disk on each call, never cached
    assert source.fingerprint(splits=("train", "val")) == before_training


# --- property: any small tree is discovered exactly or refused with a DataError ---------------

def _expected_positive(classes: frozenset[str]) -> str | None:
    if "covid" in classes:
        return "covid"
    return "viral" if classes == {"normal", "viral"} else None


def _expected_records(tree: dict[str, dict[str, int]]) -> set[tuple[str, str, str, int]] | None:
    class_sets = {frozenset(classes) for classes in tree.values()}
    if set(tree) != set(SPLITS) or len(class_sets) != 1:
        return None
    classes = next(iter(class_sets))
    positive = _expected_positive(classes)
    if len(classes) < 2 or positive is None or any(n == 0 for c in tree.values() for n in c.values()):
        return None
    return {(s, c, f"img{i}.png", int(c == positive))
            for s, per_class in tree.items() for c, n in per_class.items() for i in range(n)}


TREE_CLASSES = ("covid", "normal", "viral")
random_trees = st.dictionaries(st.sampled_from(SPLITS),
                               st.dictionaries(st.sampled_from(TREE_CLASSES), st.integers(0, 2)))
same_classes = st.sets(st.sampled_from(TREE_CLASSES), min_size=1).flatmap(
    lambda classes: st.fixed_dictionaries({s: st.fixed_dictionaries({c: st.integers(1, 2) for c in sorted(classes)})
                                           for s in SPLITS}))
trees = st.one_of(same_classes, random_trees)  # the first often succeeds, the second mostly fails


@settings(max_examples=25, deadline=None)
@given(tree=trees, nested=st.booleans(), junk=st.booleans())
def test_random_trees_are_discovered_exactly_or_refused(tree: dict[str, dict[str, int]], nested: bool,
                                                        junk: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = make_tree(base / "outer" if nested else base, tree)
        root.mkdir(exist_ok=True)
        if junk:
            for folder in [root, *root.glob("*/*")]:
                (folder / ".DS_Store").write_bytes(b"junk")
        expected = _expected_records(tree)
        try:
            source = discover(base)
        except DataError:
            assert expected is None
            return
        assert isinstance(source, DataSource)
        assert {(r.split, r.class_name, r.path.name, r.label) for r in source.records} == expected
        assert len(source.records) == len(expected)


# --------------------------------------------------------------------------- external test sets
def _external(root: Path, classes: tuple[str, ...] = CLASSES, n: int = 2) -> Path:
    return make_tree(root, {"": {c: n for c in classes}})


@pytest.mark.parametrize("layout", ["classes_at_top", "test_split", "wrapped_classes", "wrapped_splits", "zip"])
def test_external_sets_are_found_in_every_layout(tmp_path: Path, layout: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from hpstudy.data.discover import discover_external

    monkeypatch.setenv("HPSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    if layout == "classes_at_top":
        path = _external(tmp_path / "ext")
    elif layout == "test_split":
        path = full_tree(tmp_path / "ext")  # train/ and val/ beside test/ are ignored
    elif layout == "wrapped_classes":
        _external(tmp_path / "ext" / "hospital_b")
        path = tmp_path / "ext"
    elif layout == "wrapped_splits":
        full_tree(tmp_path / "ext" / "hospital_b")
        path = tmp_path / "ext"
    else:
        path = zip_folder(_external(tmp_path / "ext"), tmp_path / "ext.zip", prefix="hospital_b/")
    source = discover_external(path, class_names=["normal", "covid"], positive_class="covid")
    assert {r.split for r in source.records} == {"test"} and len(source.split("test")) == 4
    assert sorted((r.class_name, r.label) for r in source.records) == [("covid", 1)] * 2 + [("normal", 0)] * 2
    assert source.class_names == CLASSES and source.positive_class == "covid" and source.origin == path.absolute()
    assert all(r.path.relative_to(source.root).parts[0] in CLASSES for r in source.records)


def test_external_set_with_other_class_names_names_both_lists(tmp_path: Path) -> None:
    from hpstudy.data.discover import discover_external

    path = _external(tmp_path / "ext", classes=("covid", "healthy"))
    with pytest.raises(DataError, match=r"has the class folders \[covid, healthy\] .*but the study has "
                                        r"\[covid, normal\]: it needs the same class folders"):
        discover_external(path, class_names=CLASSES, positive_class="covid")
    with pytest.raises(DataError, match=r"does not exist: expected a folder or a \.zip holding a test/ folder"):
        discover_external(tmp_path / "missing", class_names=CLASSES, positive_class="covid")
    (path / "covid" / "broken.png").write_bytes(b"not a png")
    (path / "healthy").rename(path / "normal")
    with pytest.raises(DataError, match=r"1 file\(s\) .* not readable images[\s\S]*covid/broken\.png"):
        discover_external(path, class_names=CLASSES, positive_class="covid")
