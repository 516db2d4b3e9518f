"""Resident memory across the trials of one study: RSS after trial 2 vs after the last trial.

The same small study (the tiny CNN of search_spaces/demo_cnn.yaml, 20 random trials of 2 epochs at 64 px
on xray-course) runs twice, side by side in this run: with every trial in one process
(``trials_per_process: 0``, Keras Tuner's usual way) and in fresh child processes of N trials each
(``trials_per_process: N``, default 5). Each trial records the resident memory (VmRSS) of the process that
ran it right after hpstudy's end-of-trial cleanup (``clear_session`` + garbage collection) in the trials
table (``rss_mib``, ``pid``). A leak shows as a steady climb; the target is <= 10 % growth between trial 2
(everything warmed up) and trial 20. Wall times of the two runs give the cost of the fresh processes.

    python benchmarks/bench_memory.py            # 20 trials x 2 epochs, 64 px, xray-course, N = 5
    python benchmarks/bench_memory.py --quick    # 6 trials x 1 epoch, 32 px, xray-sample, N = 2
    python benchmarks/bench_memory.py --plain-keras   # the same fits in a bare Keras loop (no hpstudy,
                                                      # no Keras Tuner): clear_session + gc.collect each time
"""

from __future__ import annotations

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="trials (default 20, --quick 6)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 2, --quick 1)")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 64, --quick 32)")
    p.add_argument("--trials-per-process", type=int, default=None, help="N of the second run (default 5, --quick 2)")
    p.add_argument("--plain-keras", action="store_true", help="bare Keras loop instead of a study (attribution)")
    args = p.parse_args()
    trials = args.trials or (6 if args.quick else 20)
    epochs = args.epochs or (1 if args.quick else 2)
    size = args.image_size or (32 if args.quick else 64)
    per_process = args.trials_per_process or (2 if args.quick else 5)
    c.header("resident memory across trials", args)
    data, folder = c.data_folder(args), c.workdir(args, "memory")

    if args.plain_keras:
        start, rss = _plain_keras(data, folder, trials, epochs, size)
        print(f"before the loop {start:.0f} MiB")
        _report("bare Keras loop", rss, [0] * len(rss))
        return
    import pandas as pd

    import hpstudy.study as study

    def label(n: int) -> str:
        return f"trials_per_process={n}" if n else "one process"

    runs = {}  # trials_per_process -> (rss after each trial, pids, wall seconds, scores)
    for n in (per_process, 0):
        path = c.write_yaml(folder / f"memory{n}.yaml", {
            "name": f"memory{n}", "data": str(data), "family": "baseline_cnn",
            "search_space": str(c.ROOT / "search_spaces" / "demo_cnn.yaml"),
            "oracle": {"type": "random", "max_trials": trials, "epochs": epochs},
            "early_stopping": {"monitor": "val_auc", "patience": epochs}, "seed": 7, "image_size": size,
            "normalization": "dataset", "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1},
            "leak_check": "off", "trials_per_process": n,
        })
        with c.timer() as t:
            outcome = study.run_study(path, overwrite=True)
        table = pd.read_csv(outcome.study_dir / "trials.csv", dtype={"trial_id": str})
        runs[n] = (table["rss_mib"].tolist(), table["pid"].tolist(), t[0], table["score"].tolist())
    print()
    for n, (rss, pids, seconds, _) in runs.items():
        _report(f"{label(n)} ({seconds:.0f} s)", rss, pids)
    (one, _, t_one, s_one), (many, pids, t_many, s_many) = runs[0], runs[per_process]
    print(f"\npeak trial RSS: one process {max(one):.0f} MiB, {label(per_process)} {max(many):.0f} MiB")
    print(f"wall time {label(per_process)} / one process = {t_many / t_one:.2f} "
          f"({t_many - t_one:+.0f} s for {len(set(pids))} processes)")
    same = all(abs(a - b) < 1e-6 for a, b in zip(s_one, s_many, strict=True))
    print(f"same scores in both runs (same seeds): {same}")


def _plain_keras(data, folder, trials: int, epochs: int, size: int) -> tuple[float, list[float]]:
    """Fresh model per 'trial' (the demo CNN at its defaults), fit on the same data, then cleanup."""
    import gc

    import keras
    import keras_tuner as kt

    from hpstudy.config import load_search_space
    from hpstudy.config.settings import Augmentation
    from hpstudy.data.discover import resolve_source
    from hpstudy.data.pipeline import make_dataset
    from hpstudy.data.prepare import prepare_data
    from hpstudy.models import BaselineCNN

    prepared = prepare_data(resolve_source(data), image_size=(size, size), normalization="dataset",
                            leak_check="off", cache_dir=folder / "cache")
    space = load_search_space(c.ROOT / "search_spaces" / "demo_cnn.yaml")
    start, rss = c.rss_mb(), []
    for trial in range(trials):
        keras.backend.clear_session()
        gc.collect()
        model = BaselineCNN(space, input_shape=prepared.input_shape).build(kt.HyperParameters())
        train = make_dataset(prepared.x_train, prepared.y_train, batch_size=16, normalizer=prepared.normalizer,
                             training=True, augmentation=Augmentation(), seed=trial)
        val = make_dataset(prepared.x_val, prepared.y_val, batch_size=16, normalizer=prepared.normalizer,
                           training=False)
        model.fit(train, validation_data=val, epochs=epochs, verbose=0)
        del model, train, val
        keras.backend.clear_session()
        gc.collect()
        rss.append(c.rss_mb())
        print(f"fit {trial + 1}/{trials}: VmRSS {rss[-1]:.0f} MiB", flush=True)
    return start, rss


def _report(label: str, rss: list[float], pids: list[int]) -> None:
    """Growth from trial 2 to the last trial, each read in the process that ran it."""
    print(f"-- {label}: VmRSS after each trial (MiB), | where a fresh process took over")
    marks = ["| " if i and pids[i] != pids[i - 1] else "" for i in range(len(rss))]
    print(" ".join(f"{mark}{i + 1}:{value:.0f}" for i, (mark, value) in enumerate(zip(marks, rss, strict=True))))
    if len(rss) < 2:
        print("too few trials to compare")
        return
    second, last = rss[1], rss[-1]
    growth = (last - second) / second
    verdict = "met" if growth <= 0.10 else "NOT met"
    print(f"growth trial 2 -> trial {len(rss)}: {growth:+.1%} (target <= +10%: {verdict}); "
          f"{(last - second) / max(len(rss) - 2, 1):+.1f} MiB per trial; peak {max(rss):.0f} MiB")


if __name__ == "__main__":
    main()
