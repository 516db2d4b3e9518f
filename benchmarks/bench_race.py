"""Race: hpstudy's shipped Hyperband study vs plain Keras Tuner vs Optuna, same space, data, size and wall clock.

Each run is a fresh process with the same wall-clock budget, killed when it is over; the runs alternate
between the tools seed by seed, so shared load hits each tool alike. The tools:

* ``hpstudy``: ``studies/covid_cnn_hyperband.yaml`` as shipped (Hyperband max_epochs 30, factor 3, early
  stopping patience 5, trials_per_process 5, leak check), only ``data``, ``image_size`` and ``seed`` set;
* ``kt``: plain Keras Tuner as a student writes it (``benchmarks/_race_peers.py``): a HyperModel,
  ``image_dataset_from_directory``, EarlyStopping, ``kt.Hyperband`` with the same settings, ``tuner.search``;
* ``optuna``: TPE + Hyperband pruner on the same model builder and data loading (needs ``pip install
  -e ".[bench]"``).

For every tool: the best val AUC at the end of the budget (median and range over seeds), the median best so
far along the way, and the time each tool needed to reach the best of the *other* tools' median final best.

    python benchmarks/bench_race.py --budget 180 --seeds 1 2 3     # xray-course, 64 px
    python benchmarks/bench_race.py --quick                          # xray-sample, 32 px, 45 s, one seed
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads

TOOLS = ("hpstudy", "kt", "optuna")
PEERS = Path(__file__).resolve().parent / "_race_peers.py"


def _hpstudy_yaml(folder: Path, data: Path, size: int, seed: int) -> Path:
    import yaml

    study = yaml.safe_load((c.ROOT / "studies" / "covid_cnn_hyperband.yaml").read_text())
    study.update(name=f"race_seed{seed}", data=str(data), image_size=[size, size], seed=seed,
                 search_space=str(c.ROOT / "search_spaces" / "baseline_cnn.yaml"))
    return c.write_yaml(folder / f"race_seed{seed}.yaml", study)


def _command(tool: str, data: Path, size: int, seed: int, folder: Path) -> list[str]:
    if tool == "hpstudy":
        code = "import sys; from hpstudy.cli import main; sys.exit(main())"
        return [sys.executable, "-c", code, "search", str(_hpstudy_yaml(folder, data, size, seed))]
    return [sys.executable, str(PEERS), tool, str(data), str(size), str(seed), str(folder / tool)]


def _run(tool: str, data: Path, size: int, seed: int, folder: Path, budget: float) -> list[tuple[float, float]]:
    """Run one tool for ``budget`` seconds; returns (seconds since start, trial score) of the trials done by then."""
    run_dir = folder / f"{tool}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(c.ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.time()
    with open(run_dir / "output.log", "w") as log:
        process = subprocess.Popen(_command(tool, data, size, seed, run_dir), stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        try:
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    points = _hpstudy_points(run_dir, start) if tool == "hpstudy" else _peer_points(run_dir / tool)
    return sorted((t, s) for t, s in points if t <= budget)


def _hpstudy_points(run_dir: Path, start: float) -> list[tuple[float, float]]:
    """Each completed trial's score at the time hpstudy_trial.json was written (when the trial ended)."""
    points = []
    for trial_json in run_dir.glob("race_seed*/tuner/trial_*/trial.json"):
        trial, meta = json.loads(trial_json.read_text()), trial_json.parent / "hpstudy_trial.json"
        if trial.get("status") == "COMPLETED" and trial.get("score") is not None and meta.is_file():
            points.append((meta.stat().st_mtime - start, float(trial["score"])))
    return points


def _peer_points(folder: Path) -> list[tuple[float, float]]:
    path = folder / "progress.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(float(r["t"]), float(r["score"])) for r in rows if r["score"] == r["score"]]


def _best_at(points: list[tuple[float, float]], t: float) -> float:
    return max((s for when, s in points if when <= t), default=float("nan"))


def _time_to(points: list[tuple[float, float]], target: float) -> float:
    return next((when for when, s in sorted(points) if s >= target), float("inf"))


def _med(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(statistics.median(finite)) if finite else float("nan")


def _summary(runs: dict[str, list[list[tuple[float, float]]]], budget: float) -> None:
    finals = {tool: [_best_at(p, budget) for p in runs[tool]] for tool in runs}
    print("\n-- best val AUC at the end of the budget (median [min, max] over seeds; trials done)")
    for tool, values in finals.items():
        done = [len(p) for p in runs[tool]]
        print(f"{tool:8s} {_med(values):.4f} [{min(values):.4f}, {max(values):.4f}]  per seed "
              f"{', '.join(f'{v:.4f}' for v in values)}; trials {done}")
    steps = [budget * k / 6 for k in range(1, 7)]
    print("\n-- median best so far at " + ", ".join(f"{s:.0f}s" for s in steps))
    for tool in runs:
        print(f"{tool:8s} " + "  ".join(f"{_med([_best_at(p, s) for p in runs[tool]]):.4f}" for s in steps))
    print("\n-- time to reach the best of the other tools' median final best (median over seeds; inf = not reached)")
    times: dict[str, dict[str, float]] = {}
    for tool in runs:
        others = {o: _med(finals[o]) for o in runs if o != tool}
        target = max(others.values()) if others else float("nan")
        times[tool] = {"target": target, "time": _med([_time_to(p, target) for p in runs[tool]])}
        print(f"{tool:8s} target {target:.4f} ({max(others, key=others.get) if others else '-'}): "
              f"{times[tool]['time']:.0f} s; per seed "
              f"{', '.join(f'{_time_to(p, target):.0f}' for p in runs[tool])}")
    _verdict(runs, finals)


def _verdict(runs: dict[str, list[list[tuple[float, float]]]], finals: dict[str, list[float]]) -> None:
    if "hpstudy" not in runs or len(runs) < 2:
        return
    peers = [t for t in runs if t != "hpstudy"]
    target = max(_med(finals[p]) for p in peers)
    mine = _med([_time_to(p, target) for p in runs["hpstudy"]])
    fastest = min(_med([_time_to(p, target) for p in runs[peer]]) for peer in peers)
    ratio = mine / fastest if fastest not in (0.0, float("inf")) else float("nan")
    met = "met" if ratio <= 0.5 else "NOT met"
    print(f"\nhpstudy reaches the best of the peers' median val AUC ({target:.4f}) in {mine:.0f} s; the fastest "
          f"peer in {fastest:.0f} s: ratio {ratio:.2f} (target <= 0.5: {met})")


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=None, help="wall-clock seconds per run (default 180, --quick 45)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 1 2 3 (--quick: 1)")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 64, --quick 32)")
    p.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    args = p.parse_args()
    budget, size = args.budget or (45.0 if args.quick else 180.0), args.image_size or (32 if args.quick else 64)
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    c.header("race: hpstudy vs Keras Tuner vs Optuna at an equal wall-clock budget", args)
    data, folder = c.data_folder(args), c.workdir(args, "race")
    print(f"data: {data}, {size} px, budget {budget:.0f} s per run, seeds {seeds}, tools {args.tools}", flush=True)
    runs: dict[str, list[list[tuple[float, float]]]] = {tool: [] for tool in args.tools}
    for seed in seeds:
        for tool in args.tools:
            points = _run(tool, data, size, seed, folder, budget)
            runs[tool].append(points)
            best = max((s for _, s in points), default=float("nan"))
            print(f"  seed {seed} {tool}: {len(points)} trials, best val AUC {best:.4f}", flush=True)
            (folder / "race.json").write_text(json.dumps(runs))
    _summary(runs, budget)


if __name__ == "__main__":
    main()
