"""The README's workflow, command by command, as a newcomer copies it into a shell (slow).

The commands are read from the README's "Using the course data" section, so the test follows the README
when it changes. Only two things differ from what a user types: the data path (the real sample images)
and a small budget added to ``search`` with ``--set``. Every command must exit 0, and the later stages
must run with the search's settings without repeating its ``--set`` or ``--data``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_BUDGET = ["--set", "oracle.max_epochs=2", "--set", "image_size=32"]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using the course data"):text.index("## A study on disk")]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("hpstudy "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_readme_lists_the_whole_workflow() -> None:
    verbs = [command[0] for command in readme_commands()]
    assert verbs == ["explore", "search", "status", "export", "finalize", "evaluate", "gradcam", "probe", "report"]


@pytest.mark.slow
def test_the_readme_workflow_runs_to_the_report(sample_data: Path, tmp_path: Path) -> None:
    for folder in ("studies", "search_spaces"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    for command in readme_commands():
        command = [str(sample_data) if arg == "path/to/covid_xray.zip" else arg for arg in command]
        if command[0] == "search":
            command += SMALL_BUDGET
        result = subprocess.run([sys.executable, "-m", "hpstudy.cli", *command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"hpstudy {' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr
    assert (tmp_path / "reports" / "cnn" / "report.html").is_file()
    frozen = (tmp_path / "studies" / "covid_cnn_hyperband" / "study.yaml").read_text()
    assert "- 32" in frozen, "the search's --set image_size=32 is frozen with the study"
