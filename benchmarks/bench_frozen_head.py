"""Frozen-head study time: backbone in the loop (naive) vs the feature cache, same seeds, space and epochs.

Both sides are hpstudy RandomSearch studies of the resnet50v2_head family with the project's search
space (search_spaces/resnet50v2_head.yaml), the same seed, image size, augmentation and epochs:

* naive  — ``feature_cache: false``: every trial trains the full ResNet50V2Head model on images, the
           usual Keras Tuner recipe (the frozen backbone runs in every epoch of every trial);
* cached — ``feature_cache: {views: K}``: the backbone runs once per image and view, the trials train
           the head alone on the stored features. The cache build is counted in its time.

Early stopping is effectively off by default (patience = epochs) so every trial trains the same
number of epochs on both sides. A full naive run takes hours on a CPU, so by default only the first
``--naive-trials`` trials are run naive (the oracle's seed gives them the same hyperparameters as the
cached study's first trials) and the rest is extrapolated from their seconds per epoch; the output
says so. ``--naive-trials`` equal to ``--trials`` measures everything. Weights are ``none`` (random
backbone: no internet here), so the AUCs are those of random features, not of ImageNet ones; the
naive side loads the random backbone the cached side drew and saved, so both train heads on the
same backbone.

    python benchmarks/bench_frozen_head.py            # 128 px, 20 trials x 15 epochs, 3 naive trials
    python benchmarks/bench_frozen_head.py --quick    # smoke version on xray-sample at 32 px
"""

from __future__ import annotations

import json

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads
import pandas as pd


def _study(folder, name, data, args, *, cached: bool, trials: int, weights: str = "none") -> object:
    return c.write_yaml(folder / f"{name}.yaml", {
        "name": name, "data": str(data), "family": "resnet50v2_head",
        "search_space": str(c.ROOT / "search_spaces" / "resnet50v2_head.yaml"),
        "oracle": {"type": "random", "max_trials": trials, "epochs": args.epochs},
        "early_stopping": {"monitor": "val_auc", "patience": args.patience or args.epochs},
        "seed": args.seed, "image_size": args.image_size, "normalization": "fixed",
        "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1}, "weights": weights, "leak_check": "off",
        "feature_cache": {"enabled": True, "views": args.views} if cached else False,
    })


def _run(path, *, report_only: bool) -> tuple[float, pd.DataFrame]:
    """Run the study (unless ``report_only``) and return its wall time and trials table."""
    from hpstudy.study import run_study
    from hpstudy.trials import load_trials

    folder = path.parent / path.stem
    timing = folder / "wall_seconds.json"
    if not report_only:
        with c.timer() as t:
            run_study(path)
        timing.write_text(json.dumps({"seconds": t[0]}))
    table = load_trials(folder)
    table = table.assign(number=table["trial_id"].astype(int)).sort_values("number").reset_index(drop=True)
    return _wall(folder), table


def _wall(folder) -> float:
    """The measured wall time; for runs without it, study.json's finish minus study.yaml's freeze time."""
    from datetime import datetime

    import yaml

    timing = folder / "wall_seconds.json"
    if timing.is_file():
        return float(json.loads(timing.read_text())["seconds"])
    frozen = yaml.safe_load((folder / "study.yaml").read_text())["frozen_at"]
    finished = json.loads((folder / "study.json").read_text())["finished"]
    print(f"note: {folder.name}: wall time from the study's timestamps (1 s resolution)")
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(frozen)).total_seconds()


def _hp_columns(table: pd.DataFrame) -> list[str]:
    return [col for col in table.columns if col.startswith("hp_")]


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 128, --quick 32)")
    p.add_argument("--trials", type=int, default=None, help="RandomSearch trials (default 20, --quick 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 15, --quick 2)")
    p.add_argument("--patience", type=int, default=0, help="early-stopping patience (default: = epochs, i.e. off)")
    p.add_argument("--views", type=int, default=None, help="augmented views per training image (default 4)")
    p.add_argument("--naive-trials", type=int, default=None, help="naive trials actually run (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--report-only", action="store_true", help="report on the studies already in --workdir")
    args = p.parse_args()
    quick = args.quick
    args.image_size = args.image_size or (32 if quick else 128)
    args.trials = args.trials or (3 if quick else 20)
    args.epochs = args.epochs or (2 if quick else 15)
    args.views = args.views if args.views is not None else (2 if quick else 4)
    naive_trials = min(args.naive_trials or 3, args.trials)
    c.header("frozen-head study: naive (backbone in the loop) vs feature cache", args)
    data, folder = c.data_folder(args), c.workdir(args, "frozen-head")
    print(f"data: {data}; studies in {folder}")
    print(f"settings: {args.image_size} px, RandomSearch {args.trials} trials x {args.epochs} epochs "
          f"(patience {args.patience or args.epochs}), {args.views} augmented views, weights none (random "
          f"backbone), seed {args.seed}", flush=True)

    print("-- cached: cache build + all trials", flush=True)
    cached_s, cached = _run(_study(folder, "cached", data, args, cached=True, trials=args.trials),
                            report_only=args.report_only)
    print(f"-- naive: the first {naive_trials} of {args.trials} trials", flush=True)
    # the same random backbone as the cache (weights none draws it once and saves it), not one per trial
    backbone = str(next((folder / "cached" / "cache").glob("backbone-*.weights.h5")))
    naive_s, naive = _run(_study(folder, "naive", data, args, cached=False, trials=naive_trials, weights=backbone),
                          report_only=args.report_only)
    stats = json.loads((folder / "cached" / "data_stats.json").read_text())["counts"]
    _report(args, (stats["train"], stats["val"]), cached_s, cached, naive_s, naive)


def _report(args, counts: tuple[int, int], cached_s: float, cached: pd.DataFrame, naive_s: float,
            naive: pd.DataFrame) -> None:
    common = naive["number"].tolist()  # trial ids are zero-padded differently for 3 and 20 trials
    both = cached.set_index("number").loc[common]
    same_hps = (both[_hp_columns(naive)].reset_index(drop=True)
                .equals(naive[_hp_columns(naive)].reset_index(drop=True)))
    per_epoch = naive["seconds"].sum() / naive["epochs_run"].sum()
    setup = naive_s - naive["seconds"].sum()
    rest = cached[~cached["number"].isin(common)]
    naive_total = naive_s + per_epoch * rest["epochs_run"].sum()
    extrapolated = len(rest) > 0
    speedup = naive_total / cached_s
    cached_trial_s = cached["seconds"].sum()
    print("\n-- per trial (the trials run on both sides)")
    table = pd.DataFrame({"trial": common, "epochs": naive["epochs_run"].values,
                          "naive_s": naive["seconds"].round(1).values, "cached_s": both["seconds"].round(2).values,
                          "naive_val_auc": naive["score"].round(4).values,
                          "cached_val_auc": both["score"].round(4).values})
    print(table.to_string(index=False))
    print(f"same hyperparameters on both sides: {same_hps}")
    print("\n-- results")
    print(f"cached end to end: {cached_s:.1f} s (cache build and data preparation "
          f"{cached_s - cached_trial_s:.1f} s + {len(cached)} head trials {cached_trial_s:.1f} s, "
          f"{cached['epochs_run'].sum()} epochs)")
    print(f"naive: {naive_s:.1f} s measured for {len(naive)} trial(s) ({per_epoch:.2f} s per epoch, "
          f"setup {setup:.1f} s)")
    if extrapolated:
        print(f"naive end to end: {naive_total:.0f} s EXTRAPOLATED to {args.trials} trials from the measured "
              f"seconds per epoch x the epochs of the remaining {len(rest)} trials")
    else:
        print(f"naive end to end: {naive_total:.1f} s measured")
    print(f"speedup (naive / cached, end to end{', naive extrapolated' if extrapolated else ''}): {speedup:.1f}x "
          f"(target >= 25x: {'met' if speedup >= 25 else 'NOT met'})")
    n_train, n_val = counts
    bound = args.trials * args.epochs * (n_train + n_val) / ((args.views + 1) * n_train + n_val)
    print(f"(ceiling of the ratio with these settings, if only backbone passes counted: naive "
          f"{args.trials}x{args.epochs}x({n_train}+{n_val}) / cached ({args.views}+1)x{n_train}+{n_val} "
          f"= {bound:.0f}x)")
    best_naive, best_cached_common = naive["score"].max(), both["score"].max()
    gap = abs(best_naive - best_cached_common)
    print(f"best val AUC over the {len(common)} common trial(s): naive {best_naive:.4f}, cached "
          f"{best_cached_common:.4f}, difference {gap:.4f} (target <= 0.01: {'met' if gap <= 0.01 else 'NOT met'})")
    print(f"best val AUC of the cached study over all {len(cached)} trials: {cached['score'].max():.4f} "
          "(weights none: random-backbone features)")


if __name__ == "__main__":
    main()
