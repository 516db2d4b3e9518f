"""Where a report's PNGs go, and small readers for the JSON/CSV artefacts of a run (missing -> None)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import atomic_write_bytes
from hpstudy._io import read_json as _read_json

__all__ = ["Assets", "read_json", "read_csv", "caption_from_name"]


@dataclass
class Assets:
    """The PNG files of one part of a report, kept in ``out_dir/prefix/``."""

    out_dir: Path
    prefix: str
    written: list[Path] = field(default_factory=list)

    def path(self, name: str) -> Path:
        """Where a new figure called ``name`` is drawn (recorded as written)."""
        target = self.out_dir / self.prefix / name
        self.written.append(target)
        return target

    def copy(self, source: Path, name: str) -> Path:
        """Copy an existing PNG of the run into the report folder; returns the copy."""
        return atomic_write_bytes(self.path(name), source.read_bytes())


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (a report shows what exists)."""
    return _read_json(path, default=None)


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV table, or None when the file is missing or unreadable; an empty file gives an empty table."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError):
        return None


def caption_from_name(path: Path) -> str:
    """``class_balance.png`` -> ``Class balance``."""
    text = path.stem.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]
