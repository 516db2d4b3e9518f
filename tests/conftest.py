"""Shared fixtures: the real sample images and a seeded random state for every test."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

SAMPLE_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/xray-sample"


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
