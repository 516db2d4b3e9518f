"""The report in a real browser: headless Chromium loads report.html, its inline check script verifies
every image decoded and every section has content, and a screenshot is kept for a person to look at.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``; CI installs it). Skipped, with the reason,
when it is absent. Every Chromium run is bounded by a timeout and gets a fresh profile directory.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpstudy.report import write_report
from hpstudy.report.html import CHECK_ELEMENT_ID
from tests.test_report import make_fake_study, trial

CHROMIUM = Path(os.environ.get("HPSTUDY_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT = 90
SCREENSHOT_COPY = Path(__file__).resolve().parents[1] / "reports" / "_browser_check.png"
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=5000")

# In CI (.ci/run installs Chromium) a missing browser is a failure, not a silent skip.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason=f"headless Chromium not found at {CHROMIUM}: `apt-get install -y chromium` (the CI script does)")


def run_chromium(args: list[str], workdir: Path) -> str:
    """Run headless Chromium with a fresh profile; returns stdout. Killed (whole group) after TIMEOUT s."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
    command = [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium did not finish within {TIMEOUT}s: {' '.join(command)}")
    assert process.returncode == 0, f"Chromium exited with {process.returncode}:\n{stderr[-2000:]}"
    return stdout


def page_check(report: Path, workdir: Path) -> dict[str, Any]:
    """The JSON the page's inline script wrote into <pre id="hpstudy-check"> after loading."""
    dom = run_chromium(["--dump-dom", report.resolve().as_uri()], workdir)
    match = re.search(rf'<pre id="{CHECK_ELEMENT_ID}"[^>]*>(.*?)</pre>', dom, re.S)
    assert match and match.group(1).strip(), "the check script did not run (no result in the dumped DOM)"
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("studies")
    full = make_fake_study(root, "random_search", finetuned=True, family="resnet50v2_head")
    bare = make_fake_study(root, "bayesian <search>", oracle="bayesian", family="resnet50v2_head", explore=False,
                           finalized=False, evaluated=False,
                           trials=[trial("0", 0.7, 5.0, 3, learning_rate=1e-2, optimizer="adam", dropout=0.4),
                                   trial("1", 0.92, 5.0, 3, learning_rate=1e-4, optimizer="sgd", dropout=0.2)])
    return write_report([full, bare], out_dir=tmp_path_factory.mktemp("report"))


def test_every_image_loads_and_every_section_has_content(report: Any, tmp_path: Path) -> None:
    result = page_check(report.html, tmp_path)
    expected_images = report.html.read_text().count("<img ")
    assert result["images"] == expected_images > 10
    assert result["broken_images"] == []
    assert result["sections"] > 20 and result["empty_sections"] == []
    assert result["ok"] is True


def test_check_script_catches_a_broken_image_and_an_empty_section(report: Any, tmp_path: Path) -> None:
    text = report.html.read_text().replace(
        "</main>", '<section id="hollow"><h2>Hollow</h2> </section>'
                   '<img src="data:image/png;base64,AAAA" alt="broken one"></main>')
    broken = tmp_path / "broken.html"
    broken.write_text(text)
    result = page_check(broken, tmp_path)
    assert result["broken_images"] == ["broken one"]
    assert result["empty_sections"] == ["hollow"]
    assert result["ok"] is False


def test_screenshot(report: Any, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1280,4000", report.html.resolve().as_uri()], tmp_path)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10, "the screenshot is blank"
    SCREENSHOT_COPY.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
