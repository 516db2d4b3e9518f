"""Find the images of a study: a folder or a ``.zip`` holding ``train/ val/ test/``, one subfolder per class.

The split folders may sit at the top of the folder or archive, or inside one top-level folder
(``covid_xray/train/...``). A zip is extracted once into a cache keyed by its content
(``$HPSTUDY_CACHE_DIR/zips/<sha1[:16]>``, default ``~/.cache/hpstudy``); the extraction goes to a
temporary folder that is renamed into place, so a crash never leaves a half-extracted archive.

Which files count as images: only the files directly inside a class folder whose suffix is one of
``IMAGE_SUFFIXES`` (any case). Hidden files (``.DS_Store``, ``._x.png``), ``Thumbs.db``,
``desktop.ini``, ``__MACOSX`` and every file with another suffix (``.txt``, ``.csv``, ``.json``,
``.md``, but also unknown ones such as ``.dcm`` or ``.bak``) are ignored silently, as are folders
nested inside a class folder, with one exception: a class folder holding no image itself but an
``images/`` folder (the COVID-19 Radiography Database layout, ``<class>/images/`` beside
``<class>/masks/``) takes the images of ``images/``; lung masks are found by ``data.masks``.
A file with an image suffix that does not decode is an error: with ``verify`` every image is decoded
and all the bad files are listed in one ``DataError``.
Images are decoded by content (PNG or JPEG), 1 to 4 channels, 8 or 16 bits, any size.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpstudy.errors import DataError, StudyError

__all__ = ["SPLITS", "TRAINING_SPLITS", "IMAGE_SUFFIXES", "ImageRecord", "DataSource", "discover", "read_image",
           "file_sha1", "resolve_source", "check_fingerprint", "discover_external"]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
_NEGATIVE_WORDS = frozenset({"normal", "negative", "healthy", "clear"})
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
Layout = dict[str, dict[str, list[Path]]]


@dataclass(frozen=True)
class ImageRecord:
    """One image file of the data set."""

    path: Path
    split: str
    class_name: str
    label: int


@dataclass(frozen=True)
class DataSource:
    """A discovered data set: where it is, its classes and every image record."""

    root: Path
    class_names: tuple[str, ...]
    positive_class: str
    records: tuple[ImageRecord, ...]
    origin: Path

    def split(self, name: str) -> tuple[ImageRecord, ...]:
        """The records of one split (``train``, ``val`` or ``test``), in record order."""
        (name,) = _check_splits([name])
        return tuple(r for r in self.records if r.split == name)

    def counts(self) -> pd.DataFrame:
        """Image counts with columns ``split, class_name, count``: one row per split and class."""
        rows = [(s, c, sum(1 for r in self.records if r.split == s and r.class_name == c))
                for s in SPLITS for c in self.class_names]
        return pd.DataFrame(rows, columns=["split", "class_name", "count"])

    def fingerprint(self, *, splits: Iterable[str] | None = None) -> str:
        """SHA-256 hex digest over the sorted (split, class, file name, content SHA-1) of the images.

        It changes when any image is added, removed, renamed, moved or modified. The files are read
        on every call, never cached, so the digest describes the content at call time (about 0.1 s
        for 2,200 files of 35 KB).

        Args:
            splits: restrict the digest to these splits (default: all), e.g. to leave ``test`` unread.

        Raises:
            DataError: a file cannot be read.
        """
        chosen = set(_check_splits(SPLITS if splits is None else splits))
        digest = hashlib.sha256()
        keys = sorted((r.split, r.class_name, r.path.name, r.path) for r in self.records if r.split in chosen)
        for split, class_name, name, path in keys:
            digest.update(f"{split}\0{class_name}\0{name}\0{file_sha1(path)}\n".encode())
        return digest.hexdigest()


def discover(path: str | os.PathLike[str], *, positive_class: str | None = None,
             verify: bool | Iterable[str] = True) -> DataSource:
    """Discover the splits, classes and images of a data folder or zip archive.

    Args:
        path: a folder, or a ``.zip`` file, holding ``train/ val/ test/`` (possibly inside one
            top-level folder), each with one subfolder per class.
        positive_class: the class labelled 1; by default the class whose name contains "covid",
            else (two classes) the one that is not named like normal/negative/healthy/clear.
        verify: decode every image (True), none (False), or only those of the given splits
            (e.g. ``("train", "val")`` keeps the test split unread).

    Returns:
        The ``DataSource``; records sorted by (split, class_name, path).

    Raises:
        DataError: the path is missing, the archive is unreadable, the layout is wrong (missing
            splits, class folders differing between splits, empty folders, a single class), the
            positive class cannot be chosen, or verified files are not decodable images.
    """
    origin = Path(path).expanduser().absolute()
    root = _split_root(_open_location(origin), origin)
    layout = _scan(root)
    class_names = _check_classes(layout, root)
    positive = _choose_positive(class_names, positive_class, root)
    records = tuple(sorted((ImageRecord(p, s, c, int(c == positive))
                            for s, classes in layout.items() for c, files in classes.items() for p in files),
                           key=lambda r: (r.split, r.class_name, str(r.path))))
    _verify(records, _verify_splits(verify), root)
    return DataSource(root, class_names, positive, records, origin)


def read_image(path: Path) -> np.ndarray:
    """Decode one PNG or JPEG file (chosen by content, not suffix) as stored.

    Args:
        path: the image file.

    Returns:
        An ``H x W x C`` array, ``uint8`` or (16-bit PNG) ``uint16``, with C in 1, 3, 4
        (a grey+alpha image keeps its grey channel only).

    Raises:
        DataError: naming the file and why it is not an image (unreadable, empty, not PNG/JPEG,
            truncated, corrupt).
    """
    try:
        return _load(Path(path))
    except _BadImage as exc:
        raise DataError(f"{path}: {exc}") from None


def file_sha1(path: Path) -> str:
    """SHA-1 hex digest of a file's bytes.

    Raises:
        DataError: the file cannot be read.
    """
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest()


# --- location: folder or zip ------------------------------------------------------------------

def _open_location(origin: Path, holding: str = "train/ val/ test/") -> Path:
    if not origin.exists():
        raise DataError(f"data path {origin} does not exist: expected a folder or a .zip "
                        f"holding {holding}")
    if origin.is_dir():
        return origin.resolve()
    if origin.suffix.lower() != ".zip":
        raise DataError(f"data path {origin} is a file but not a .zip archive: expected a folder "
                        f"or a .zip holding {holding}")
    return _extract_zip(origin)


def _extract_zip(archive: Path) -> Path:
    target = Path(os.environ.get("HPSTUDY_CACHE_DIR", "~/.cache/hpstudy")).expanduser() / "zips"
    target = target / file_sha1(archive)[:16]
    if target.is_dir():
        return target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _extract_members(archive, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target.resolve()


def _extract_members(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as handle:
            members = [m for m in handle.infolist() if "__MACOSX" not in Path(m.filename).parts]
            handle.extractall(into, members=members)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"{archive} is not a readable zip archive ({exc}): re-download or re-create it") from None


# --- layout -----------------------------------------------------------------------------------

def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_ignored(p.name))


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _is_image_name(name: str) -> bool:
    return not _is_ignored(name) and name.lower().endswith(IMAGE_SUFFIXES)


def _split_root(base: Path, origin: Path) -> Path:
    root = base
    if not any((base / s).is_dir() for s in SPLITS):
        children = _visible_dirs(base)
        if len(children) == 1 and any((children[0] / s).is_dir() for s in SPLITS):
            root = children[0]
    missing = [f"{s}/" for s in SPLITS if not (root / s).is_dir()]
    if missing:
        found = ", ".join(f"{p.name}/" for p in _visible_dirs(root)) or "no folders"
        where = "" if root == origin else f" (looked in {root})"
        raise DataError(f"{origin}: missing split folder(s) {', '.join(missing)}{where}; expected train/ val/ "
                        f"test/ each with one subfolder per class, found {found}")
    return root


def _scan(root: Path) -> Layout:
    layout: Layout = {}
    for split in SPLITS:
        folder = root / split
        loose = sorted(p.name for p in folder.iterdir() if _is_image_name(p.name) and not p.is_dir())
        if loose:
            raise DataError(f"{folder} holds {len(loose)} image file(s) directly ({', '.join(loose[:3])}"
                            f"{', ...' if len(loose) > 3 else ''}): put them in one subfolder per class")
        classes = {d.name: _image_files(d) for d in _visible_dirs(folder)}
        if not classes:
            raise DataError(f"split folder {folder} has no images: expected one subfolder per class, "
                            f"e.g. {split}/covid/ and {split}/normal/")
        layout[split] = classes
    return layout


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if _is_image_name(p.name) and not p.is_dir())
    if not files and (folder / "images").is_dir():  # <class>/images/ beside <class>/masks/
        files = sorted(p for p in (folder / "images").iterdir() if _is_image_name(p.name) and not p.is_dir())
    return files


def _check_classes(layout: Layout, root: Path) -> tuple[str, ...]:
    per_split = {s: sorted(classes) for s, classes in layout.items()}
    if len({tuple(c) for c in per_split.values()}) > 1:
        shown = "; ".join(f"{s}/: {', '.join(c)}" for s, c in per_split.items())
        raise DataError(f"class folders differ between splits in {root} ({shown}): every split needs "
                        f"the same class subfolders")
    empty = [f"{s}/{c}/" for s, classes in layout.items() for c, files in classes.items() if not files]
    if empty:
        raise DataError(f"class folder(s) with no images in {root}: {', '.join(empty)} "
                        f"(images must have a suffix among {', '.join(IMAGE_SUFFIXES)})")
    names = tuple(per_split["train"])
    if len(names) < 2:
        raise DataError(f"only one class folder ({names[0]}/) in the splits of {root}: a classifier "
                        f"needs at least two classes, e.g. covid/ and normal/")
    return names


def _choose_positive(classes: Sequence[str], requested: str | None, root: Path) -> str:
    listed = ", ".join(classes)
    if requested is not None:
        if requested not in classes:
            raise DataError(f"positive_class {requested!r} is not one of the classes found in {root}: {listed}")
        return requested
    covid = [c for c in classes if "covid" in c.lower() and not _is_negative(c)]
    if len(covid) == 1:
        return covid[0]
    negatives = [c for c in classes if _is_negative(c)]
    if len(classes) == 2 and len(negatives) == 1:
        return next(c for c in classes if c != negatives[0])
    raise DataError(f"cannot tell which class is positive among {listed} (in {root}): pass positive_class "
                    f"(--positive-class NAME) with one of them")


def _is_negative(name: str) -> bool:
    lowered = name.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return bool(words & _NEGATIVE_WORDS) or re.match(r"(non|not|no)[^a-z0-9]*covid", lowered) is not None


# --- verification and decoding ----------------------------------------------------------------

def _check_splits(splits: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(splits)
    unknown = [s for s in chosen if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}: expected some of {', '.join(SPLITS)}")
    return chosen


def _verify_splits(verify: bool | Iterable[str]) -> tuple[str, ...]:
    if isinstance(verify, bool):
        return SPLITS if verify else ()
    if isinstance(verify, str):
        return _check_splits([verify])
    return _check_splits(verify)


def _verify(records: Sequence[ImageRecord], splits: tuple[str, ...], root: Path) -> None:
    problems = []
    for record in records:
        if record.split not in splits:
            continue
        try:
            _load(record.path)
        except _BadImage as exc:
            problems.append(f"  {record.path.relative_to(root).as_posix()}: {exc}")
    if problems:
        raise DataError(f"{len(problems)} file(s) in {root} are not readable images; fix or remove them:\n"
                        + "\n".join(problems))


class _BadImage(Exception):
    """Why one file is not a decodable image (becomes part of a DataError)."""


def _load(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _BadImage(f"cannot be read ({exc.strerror or exc})") from None
    return _decode(data)


def _decode(data: bytes) -> np.ndarray:
    if not data:
        raise _BadImage("empty file (0 bytes)")
    kind = "PNG" if data.startswith(_PNG_MAGIC) else "JPEG" if data.startswith(_JPEG_MAGIC) else None
    if kind is None:
        raise _BadImage(f"not an image: content is not PNG or JPEG (starts with {data[:8]!r})")
    import tensorflow as tf

    try:
        if kind == "PNG":
            wide = len(data) > 24 and data[24] == 16  # IHDR bit depth
            image = tf.io.decode_png(data, channels=0, dtype=tf.uint16 if wide else tf.uint8).numpy()
        else:
            image = tf.io.decode_jpeg(data, channels=0).numpy()
    except tf.errors.OpError as exc:
        raise _BadImage(_decode_failure(data, kind, exc.message)) from None
    return image[..., :1] if image.shape[-1] == 2 else image


def _decode_failure(data: bytes, kind: str, message: str) -> str:
    if _END_MARKERS[kind] not in data[-32:]:
        return f"truncated {kind} ({len(data)} bytes, end marker missing)"
    detail = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", message).strip().splitlines()[0]
    return f"corrupt {kind} data ({detail})"


# --------------------------------------------------------------------------- a study's data
TRAINING_SPLITS = ("train", "val")


def resolve_source(data: str | Path | None, *, positive_class: str | None = None,
                   expected_fingerprint: str | None = None, verified_fingerprint: str | None = None) -> DataSource:
    """Discover a data folder or zip, verifying only the training splits (the test split stays closed).

    With ``expected_fingerprint`` (the search's), the training and validation images must be the ones the
    search used. ``verified_fingerprint``: the fingerprint of training/validation images already decoded
    once (a study's frozen one); when the images still have it, they are the same bytes and are not
    decoded again (~2 s per 2,000 images, paid by every process of a ``trials_per_process`` search).

    Raises:
        StudyError: no data given, or other training/validation images than the search's.
        DataError: the folder or archive is not usable.
    """
    if data is None:
        raise StudyError("no data given: set `data:` in the study YAML or pass --data PATH")
    if verified_fingerprint is None:
        source = discover(data, positive_class=positive_class, verify=TRAINING_SPLITS)
    else:
        source = discover(data, positive_class=positive_class, verify=False)
        if source.fingerprint(splits=TRAINING_SPLITS) != verified_fingerprint:
            _verify(source.records, TRAINING_SPLITS, source.root)
    check_fingerprint(source, expected_fingerprint)
    return source


def check_fingerprint(source: DataSource, expected: str | None) -> None:
    """Refuse training/validation images other than those of fingerprint ``expected`` (None: no check)."""
    if expected is None:
        return
    found = source.fingerprint(splits=TRAINING_SPLITS)
    if found != expected:
        raise StudyError(f"the training/validation images at {source.root} are not the ones the search used "
                         f"(fingerprint {found[:12]}…, the search's {expected[:12]}…): pass --data with the "
                         "search's data")



# --------------------------------------------------------------------------- an external test set
def discover_external(path: str | os.PathLike[str], *, class_names: Sequence[str], positive_class: str) -> DataSource:
    """An external test set: a folder or ``.zip`` with a ``test/`` split or the class folders at its top (either
    maybe inside one top-level folder), every image verified; its classes must be the study's.

    Returns:
        A ``DataSource`` whose records are all in split ``test``, rooted at the folder holding the classes.

    Raises:
        DataError: a missing or unreadable path, loose images, an empty class folder, other class names than
            the study's (both lists named), or an image that does not decode.
    """
    origin = Path(path).expanduser().absolute()
    folder = _external_root(_open_location(origin, "a test/ folder or one folder per class"))
    classes = {d.name: _image_files(d) for d in _visible_dirs(folder)}
    if sorted(classes) != sorted(class_names):
        raise DataError(f"the external set {origin} has the class folders [{', '.join(sorted(classes))}] (in "
                        f"{folder}), but the study has [{', '.join(sorted(class_names))}]: it needs the same "
                        "class folders")
    misplaced = [f"{c}/ (empty)" for c, files in classes.items() if not files] + [p.name for p in _image_files(folder)]
    if misplaced:
        raise DataError(f"{folder} needs its images inside its class folders: {', '.join(misplaced[:3])}")
    records = tuple(ImageRecord(p, "test", c, int(c == positive_class)) for c in sorted(classes) for p in classes[c])
    _verify(records, ("test",), folder)
    return DataSource(folder, tuple(sorted(classes)), positive_class, records, origin)


def _external_root(base: Path) -> Path:
    """The folder holding the class folders: ``test/``, or the top (unwrapping one lone top-level folder)."""
    children = _visible_dirs(base)
    if not (base / "test").is_dir() and len(children) == 1 and any(_visible_dirs(children[0])):
        base = children[0]
    return base / "test" if (base / "test").is_dir() else base
