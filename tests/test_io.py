"""Atomic writes never leave a half-written target or a stray temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy._io import atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "trials.csv", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_temporary_file_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.keras").read_bytes() == b"x"


def test_json_is_sorted_and_handles_paths_and_numpy(tmp_path: Path) -> None:
    import numpy as np

    path = atomic_write_json(tmp_path / "a" / "b.json", {"z": Path("p"), "a": np.float32(0.5), "m": np.arange(2)})
    assert path.read_text() == '{\n  "a": 0.5,\n  "m": [\n    0,\n    1\n  ],\n  "z": "p"\n}\n'
