"""Shared fixtures: the real sample images and a seeded random state for every test."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

# HPSTUDY_SAMPLE_DATA points elsewhere, e.g. from a git worktree that has no ../shared beside it
SAMPLE_DATA = Path(os.environ.get("HPSTUDY_SAMPLE_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared/data/xray-sample")


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real 40+40/10+10/10+10 chest X-ray sample (read only: copy before modifying)."""
    if not SAMPLE_DATA.is_dir():
        pytest.skip(f"xray-sample not found at {SAMPLE_DATA}: shared data is absent")
    return SAMPLE_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed Python's and NumPy's global generators before each test."""
    random.seed(0)
    np.random.seed(0)
