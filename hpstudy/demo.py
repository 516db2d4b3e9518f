"""``hpstudy demo``: the whole pipeline on an embedded default, in about a minute on a CPU.

Without ``--data`` it runs on a clearly labelled SYNTHETIC phantom (lung-field shapes with or
without an opacity), never presented as X-rays; with ``--data`` it runs on real images.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

__all__ = ["run_demo", "DEMO_FILES"]

DEMO_FILES = ("demo_study.yaml", "demo_space.yaml")


def _write_demo_study(out_dir: Path) -> Path:
    """Copy the embedded study and search space into ``out_dir`` so the user sees what ran."""
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = resources.files("hpstudy") / "defaults"
    for name in DEMO_FILES:
        with resources.as_file(defaults / name) as source:
            shutil.copyfile(source, out_dir / name)
    return out_dir / "demo_study.yaml"


def run_demo(*, data: str | Path | None = None, out_dir: str | Path = "hpstudy-demo") -> Path:
    """Explore the data, then run the demo study (search) on it; returns the output folder.

    Args:
        data: a data folder or zip; None generates the synthetic phantom under ``out_dir``.
        out_dir: where everything is written (the study run is ``out_dir/demo/``).
    """
    from hpstudy.data.explore import explore
    from hpstudy.data.phantom import make_phantom
    from hpstudy.study import run_study

    out = Path(out_dir)
    if data is None:
        data = make_phantom(out / "phantom-data", size=48, seed=0)
        print(f"Demo data: SYNTHETIC phantom images (not X-rays) in {data}")
    explore(data, out_dir=out / "explore", image_size=(48, 48))
    print(f"Exploration (Task 1): {out / 'explore' / 'summary.md'}")
    study_yaml = _write_demo_study(out)
    run_study(study_yaml, data=data)
    print(f"Demo finished: everything is in {out}")
    return out
