"""Atomic writes never leave a half-written target or a stray temporary file."""

from __future__ import annotations

import os
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


def test_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "trials.csv", "a\n")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hpstudy._io import _HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    orphan = tmp_path / f".trials.hpstmp{_HOST}.{dead.stdout.strip()}-abc.csv.tmp.csv"
    live = tmp_path / f".trials.hpstmp{_HOST}.{os.getpid()}-def.csv.tmp.csv"
    other_host = tmp_path / f".trials.hpstmp{'0' * 8 if _HOST != '0' * 8 else '1' * 8}.1-ghi.csv.tmp.csv"
    for path in (orphan, live, other_host):
        path.write_text("half")
    atomic_write_text(tmp_path / "trials.csv", "whole\n")
    assert not orphan.exists() and live.exists() and other_host.exists()
    assert (tmp_path / "trials.csv").read_text() == "whole\n"


def test_a_sweep_removes_dead_writers_temporaries_of_files_never_written_again(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hpstudy._io import _HOST, remove_orphaned_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    trial = tmp_path / "tuner" / "trial_0"
    trial.mkdir(parents=True)
    orphan = trial / f".hpstudy_trial.hpstmp{_HOST}.{dead}-abc.json.tmp.json"
    live = trial / f".history.hpstmp{_HOST}.{os.getpid()}-def.csv.tmp.csv"
    kept = trial / "hpstudy_trial.json"
    for path in (orphan, live, kept):
        path.write_text("{}")
    assert remove_orphaned_temporaries(tmp_path) == 1
    assert not orphan.exists() and live.exists() and kept.exists()


def test_kill_point_is_inert_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpstudy._io import kill_point

    monkeypatch.delenv("HPSTUDY_TEST_KILL_AT", raising=False)
    kill_point("write:trials.csv")
    monkeypatch.setenv("HPSTUDY_TEST_KILL_AT", "write:other.csv#2")
    kill_point("write:trials.csv")  # another point: nothing happens
