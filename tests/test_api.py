"""The public API: every name in ``hpstudy.__all__`` resolves, and importing hpstudy stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hpstudy


@pytest.mark.parametrize("name", hpstudy.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(hpstudy, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hpstudy.nope  # noqa: B018


def test_import_does_not_start_tensorflow() -> None:
    code = "import sys, hpstudy, hpstudy.config; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
