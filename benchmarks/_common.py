"""Helpers shared by the benchmark scripts: data location, machine description, timing, memory, YAML."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's hpstudy, whichever copy pip installed
SHARED = ROOT.parent / "shared" / "data"
COURSE = SHARED / "xray-course"  # 1600 / 400 / 200 real chest X-rays
SAMPLE = SHARED / "xray-sample"  # 80 / 20 / 20, for --quick


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small smoke version on xray-sample (seconds, not minutes)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: xray-course, --quick: xray-sample)")
    p.add_argument("--workdir", type=Path, default=None, help="where studies are written (default: a temp dir)")
    return p


def data_folder(args: argparse.Namespace) -> Path:
    folder = args.data or (SAMPLE if args.quick else COURSE)
    if not folder.is_dir():
        sys.exit(f"data folder not found: {folder}")
    return folder


def workdir(args: argparse.Namespace, name: str) -> Path:
    import tempfile

    folder = args.workdir or Path(tempfile.mkdtemp(prefix=f"hpstudy-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def machine() -> str:
    """One line: cores, CPU model, Python and TensorFlow/Keras versions."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import keras
    import tensorflow as tf

    try:
        load = " load average {:.1f} {:.1f} {:.1f},".format(*os.getloadavg())
    except OSError:
        load = ""
    return (f"{os.cpu_count()} cores (nproc), {model}, CPU only,{load} Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")


def rss_mb() -> float:
    """Resident memory of this process (VmRSS from /proc/self/status), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def interleaved(sides: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Time each side once per round, alternating, so shared load affects every side alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, run in sides.items():
            with timer() as t:
                run()
            times[name].append(t[0])
            print(f"  round {r + 1}/{rounds} {name}: {t[0]:.2f} s", flush=True)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def header(title: str, args: argparse.Namespace) -> None:
    print(f"== {title} ==")
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"mode: {'quick (smoke test, not a measurement)' if args.quick else 'full'}", flush=True)
