"""``--workers 2`` (two local worker processes, 1 intra-op thread each) vs one process on all cores: epochs per hour.

The same random-search study of the baseline CNN (``search_spaces/baseline_cnn.yaml``, the shipped CNN
study's settings, early stopping off so every trial trains its epochs) runs through the CLI, once per
side per round, the sides alternating, each in fresh processes (``hpstudy search`` with or without
``--workers 2``). Throughput is the epochs of all trials over the search's wall time; the ratio compares
the two sides of the same round.

    python benchmarks/bench_workers.py                        # 64 px, 8 trials x 3 epochs, 2 rounds
    python benchmarks/bench_workers.py --image-size 128       # the shipped size
    python benchmarks/bench_workers.py --quick                # xray-sample, 32 px
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads
import pandas as pd


def _study(folder: Path, data: Path, size: int, trials: int, epochs: int, name: str) -> Path:
    return c.write_yaml(folder / f"{name}.yaml", {
        "name": name, "data": str(data), "family": "baseline_cnn",
        "search_space": str(c.ROOT / "search_spaces" / "baseline_cnn.yaml"),
        "oracle": {"type": "random", "max_trials": trials, "epochs": epochs},
        "early_stopping": {"monitor": "val_auc", "patience": epochs}, "seed": 42, "image_size": [size, size],
        "normalization": "dataset", "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1},
        "leak_check": "off", "trials_per_process": 0,
    })


def _search(study: Path, workers: int) -> tuple[float, pd.DataFrame]:
    command = [sys.executable, "-c", "import sys; from hpstudy.cli import main; sys.exit(main())", "search",
               str(study), "--overwrite", *(["--workers", str(workers)] if workers else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(c.ROOT), os.environ.get("PYTHONPATH", "")])}
    with c.timer() as t:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return t[0], pd.read_csv(study.parent / study.stem / "trials.csv", dtype={"trial_id": str})


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 64, --quick 32)")
    p.add_argument("--trials", type=int, default=None, help="trials per study (default 8, --quick 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3, --quick 2)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    size, trials = args.image_size or (32 if args.quick else 64), args.trials or (4 if args.quick else 8)
    epochs = args.epochs or (2 if args.quick else 3)
    c.header("workers: --workers 2 (1 thread each) vs one process", args)
    data, folder = c.data_folder(args), c.workdir(args, "workers")
    print(f"data: {data}, {size} px, random search {trials} trials x {epochs} epochs (no early stop), "
          f"{args.rounds} round(s)", flush=True)
    rows = []
    for r in range(args.rounds):
        for label, workers in (("one process", 0), ("--workers 2", 2)):
            seconds, table = _search(_study(folder, data, size, trials, epochs, f"w{workers}"), workers)
            epochs_run = float(table["epochs_run"].sum())
            rows.append({"round": r + 1, "side": label, "seconds": seconds, "epochs": epochs_run,
                         "epochs_per_hour": epochs_run / seconds * 3600, "best": table["score"].max(),
                         "useful_fraction": _fraction(table)})
            print(f"  round {r + 1} {label}: {seconds:.1f} s, {epochs_run:.0f} epochs, "
                  f"{rows[-1]['epochs_per_hour']:.0f} epochs/h, best val AUC {rows[-1]['best']:.4f}", flush=True)
    _summary(pd.DataFrame(rows))


def _fraction(table: pd.DataFrame) -> float | None:
    from hpstudy.trials import useful_fraction

    return useful_fraction(table)


def _summary(frame: pd.DataFrame) -> None:
    print("\n" + frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    pivot = frame.pivot(index="round", columns="side", values="epochs_per_hour")
    ratios = pivot["--workers 2"] / pivot["one process"]
    print(f"\nthroughput --workers 2 / one process per round: {', '.join(f'{v:.2f}' for v in ratios)}; "
          f"median {ratios.median():.2f}x (target >= 1.5x: {'met' if ratios.median() >= 1.5 else 'NOT met'})")
    print("(useful_fraction with workers counts the workers' wall time: the sum over two processes)")


if __name__ == "__main__":
    main()
