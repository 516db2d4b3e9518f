"""Resident memory across the trials of one study: RSS after trial 2 vs after the last trial.

A small in-process ``run_study`` (the tiny CNN of search_spaces/demo_cnn.yaml, 20 random trials of
2 epochs at 64 px on xray-course) records this process's VmRSS (/proc/self/status) after every trial,
right after hpstudy's end-of-trial cleanup (``clear_session`` + garbage collection). A leak (models,
graphs, datasets kept from trial to trial) shows as a steady climb; the target is <= 10 % growth
between trial 2 (everything warmed up) and trial 20.

    python benchmarks/bench_memory.py            # 20 trials x 2 epochs, 64 px, xray-course
    python benchmarks/bench_memory.py --quick    # 6 trials x 1 epoch, 32 px, xray-sample
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
    p.add_argument("--plain-keras", action="store_true", help="bare Keras loop instead of a study (attribution)")
    args = p.parse_args()
    trials = args.trials or (6 if args.quick else 20)
    epochs = args.epochs or (1 if args.quick else 2)
    size = args.image_size or (32 if args.quick else 64)
    c.header("resident memory across trials", args)
    data, folder = c.data_folder(args), c.workdir(args, "memory")

    if args.plain_keras:
        _report(*_plain_keras(data, folder, trials, epochs, size))
        return
    import hpstudy.study as study

    path = c.write_yaml(folder / "memory.yaml", {
        "name": "memory", "data": str(data), "family": "baseline_cnn",
        "search_space": str(c.ROOT / "search_spaces" / "demo_cnn.yaml"),
        "oracle": {"type": "random", "max_trials": trials, "epochs": epochs},
        "early_stopping": {"monitor": "val_auc", "patience": epochs}, "seed": 7, "image_size": size,
        "normalization": "dataset", "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1},
        "leak_check": "off",
    })
    rss: list[float] = []
    report_trial = study._Progress.__call__

    def recording(self, tuner, trial) -> None:  # runs after the tuner's end-of-trial cleanup
        report_trial(self, tuner, trial)
        rss.append(c.rss_mb())

    study._Progress.__call__ = recording
    start = c.rss_mb()
    study.run_study(path, overwrite=True)
    _report(start, rss)


def _plain_keras(data, folder, trials: int, epochs: int, size: int) -> tuple[float, list[float]]:
    """Fresh model per 'trial' (the demo CNN at its defaults), fit on the same data, then cleanup."""
    import gc

    import keras
    import keras_tuner as kt

    from hpstudy.config import load_search_space
    from hpstudy.data.pipeline import make_dataset
    from hpstudy.data.prepare import prepare_data, resolve_source
    from hpstudy.data.settings import Augmentation
    from hpstudy.hypermodels import BaselineCNN

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


def _report(start: float, rss: list[float]) -> None:
    print("\n-- VmRSS after each trial (MiB)")
    print(" ".join(f"{i + 1}:{value:.0f}" for i, value in enumerate(rss)))
    if len(rss) < 2:
        print("too few trials to compare")
        return
    second, last = rss[1], rss[-1]
    growth = (last - second) / second
    print(f"before the study {start:.0f} MiB; after trial 2 {second:.0f} MiB; after trial {len(rss)} {last:.0f} MiB; "
          f"peak {max(rss):.0f} MiB")
    verdict = "met" if growth <= 0.10 else "NOT met"
    print(f"growth trial 2 -> trial {len(rss)}: {growth:+.1%} (target <= +10%: {verdict}); "
          f"{(last - second) / max(len(rss) - 2, 1):+.1f} MiB per trial")


if __name__ == "__main__":
    main()
