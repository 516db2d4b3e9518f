"""``hpstudy demo``: the whole pipeline on an embedded default, in about a minute on a CPU.

Without ``--data`` it runs on a clearly labelled SYNTHETIC phantom (lung-field shapes with or
without an opacity), never presented as X-rays; with ``--data`` it runs on real images.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from hpstudy._io import atomic_write_bytes

log = logging.getLogger("hpstudy")

__all__ = ["run_demo", "DEMO_FILES"]

DEMO_FILES = ("demo_study.yaml", "demo_space.yaml")


def _write_demo_study(out_dir: Path) -> Path:
    """Copy the embedded study and search space into ``out_dir`` so the user sees what ran."""
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = resources.files("hpstudy") / "defaults"
    for name in DEMO_FILES:
        atomic_write_bytes(out_dir / name, (defaults / name).read_bytes())
    return out_dir / "demo_study.yaml"


def run_demo(*, data: str | Path | None = None, out_dir: str | Path = "hpstudy-demo") -> Path:
    """Explore, search, finalize, evaluate once, explain with Grad-CAM, report; returns the report path.

    Args:
        data: a data folder or zip; None generates the synthetic phantom under ``out_dir``.
        out_dir: where everything is written (the study run is ``out_dir/demo/``).
    """
    from hpstudy.config import resolve_config
    from hpstudy.data.explore import explore
    from hpstudy.data.phantom import make_phantom
    from hpstudy.evaluate import evaluate_study
    from hpstudy.explain import gradcam_study
    from hpstudy.finalize import finalize_study
    from hpstudy.paths import StudyPaths
    from hpstudy.records import ledger_entries
    from hpstudy.report import write_report
    from hpstudy.study import run_study

    out = Path(out_dir)
    if data is None:
        data = make_phantom(out / "phantom-data", size=48, seed=0)
        log.info(f"Demo data: SYNTHETIC phantom images (not X-rays) in {data}")
    explore(data, out_dir=out / "explore", image_size=(48, 48))
    log.info(f"Exploration (Task 1): {out / 'explore' / 'summary.md'}")
    study_yaml = _write_demo_study(out)
    run_study(study_yaml, data=data)
    paths = StudyPaths(resolve_config(study_yaml, data=data).study_dir)
    if not paths.model_file("final").exists():
        finalize_study(study_yaml, data=data)
    if not ledger_entries(paths):  # the test set is used once
        evaluate_study(study_yaml, data=data)
    gradcam_study(study_yaml, data=data)
    report = write_report([paths.root], out_dir=out / "report", explore_dir=out / "explore").html
    log.info(f"Demo finished: everything is in {out}\nReport: {report}")
    return report
