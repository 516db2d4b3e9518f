"""Hyperband vs RandomSearch on the same space: wall time and epochs to come within 0.01 of the best.

Two hpstudy studies of the baseline CNN with the project's search space
(search_spaces/baseline_cnn.yaml), the same data, image size, augmentation, seed and early stopping;
only the oracle differs. They run one after the other in this process. The comparison is
``hpstudy.report.compare.compare_oracles`` on the two trials tables: for each oracle, the best val AUC,
the total budget, and the wall-clock time and epochs it needed to come within 0.01 of the best val
AUC either of them found.

    python benchmarks/bench_oracles.py            # 64 px, Hyperband max_epochs 9 vs Random 10 x 9 epochs
    python benchmarks/bench_oracles.py --quick    # xray-sample, 32 px, tiny budgets
"""

from __future__ import annotations

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 64, --quick 32)")
    p.add_argument("--max-epochs", type=int, default=None, help="Hyperband max_epochs = Random epochs (default 9)")
    p.add_argument("--random-trials", type=int, default=None, help="RandomSearch trials (default 10, --quick 3)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    size = args.image_size or (32 if args.quick else 64)
    max_epochs = args.max_epochs or (3 if args.quick else 9)
    random_trials = args.random_trials or (3 if args.quick else 10)
    c.header("oracles: Hyperband vs RandomSearch on the same space", args)
    data, folder = c.data_folder(args), c.workdir(args, "oracles")
    oracles = {
        "hyperband": {"type": "hyperband", "max_epochs": max_epochs, "factor": 3, "iterations": 1},
        "random": {"type": "random", "max_trials": random_trials, "epochs": max_epochs},
    }
    print(f"data: {data}, {size} px, space search_spaces/baseline_cnn.yaml, early stopping patience "
          f"{args.patience}; oracles: {oracles}", flush=True)

    from hpstudy.report.compare import compare_oracles
    from hpstudy.study import run_study
    from hpstudy.trials import load_trials

    tables, walls = {}, {}
    for name, oracle in oracles.items():
        path = c.write_yaml(folder / f"{name}.yaml", {
            "name": name, "data": str(data), "family": "baseline_cnn",
            "search_space": str(c.ROOT / "search_spaces" / "baseline_cnn.yaml"), "oracle": oracle,
            "early_stopping": {"monitor": "val_auc", "patience": args.patience}, "seed": args.seed,
            "image_size": size, "normalization": "dataset",
            "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1}, "leak_check": "off",
        })
        print(f"-- {name}", flush=True)
        with c.timer() as t:
            run_study(path, overwrite=True)
        walls[name] = t[0]
        tables[name] = load_trials(folder / name)
    comparison = compare_oracles(tables, direction="max", margin=0.01,
                                 oracles={name: oracle["type"] for name, oracle in oracles.items()})
    print("\n-- comparison (compare_oracles, margin 0.01 of the best val AUC either found)")
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(comparison.table().to_string(index=False))
    for name, seconds in walls.items():
        print(f"{name}: wall time of the whole study {seconds:.0f} s (trials {tables[name]['seconds'].sum():.0f} s)")
    print("\n".join(comparison.summary))


if __name__ == "__main__":
    main()
