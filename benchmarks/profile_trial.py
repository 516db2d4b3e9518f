"""cProfile of one trial: where the time of a search trial goes, and proof of no Python per image.

A RandomSearch study runs one warm-up trial (decoding, caches, first tracing), then one more trial
under cProfile. The report sorts the profile by cumulative time and sums it into buckets: TensorFlow
op execution (the model's compute; the tf.data pipeline runs in C++ threads that the main thread
waits for inside it), tf.function tracing, garbage collection, Keras Tuner and hpstudy bookkeeping.
It also counts the Python calls into the input pipeline's functions during the trial: they are
traced once per dataset, so the counts stay small and do not grow with the number of images.

    python benchmarks/profile_trial.py                  # baseline CNN at 128 px, 2 epochs, xray-course
    python benchmarks/profile_trial.py --family head    # resnet50v2_head on cached features at 64 px
    python benchmarks/profile_trial.py --quick          # xray-sample, 32 px
"""

from __future__ import annotations

import cProfile
import io
import pstats

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads

# (bucket, substring of "file:function" whose CUMULATIVE time is counted; the first match wins)
_BUCKETS = [
    ("garbage collection (gc.collect)", "<built-in method gc.collect>"),
    ("tf.function tracing (once per new model)", "tracing_compilation.py:_maybe_define_function"),
    ("TensorFlow op execution (compute, C++)", "<built-in method tensorflow.python._pywrap_tfe.TFE_Py_Execute>"),
    ("trials table + study.json (hpstudy)", "study.py:__call__"),
    ("Keras Tuner checkpoints (save_weights)", "saving_api.py:save_weights"),
]
_PIPELINE = ("pipeline.py", "features.py")


def _space(family: str) -> str:
    return str(c.ROOT / "search_spaces" / ("baseline_cnn.yaml" if family == "cnn" else "resnet50v2_head.yaml"))


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--family", choices=("cnn", "head"), default="cnn")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: cnn 128, head 64; --quick 32)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the trial (default: cnn 2, head 15)")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    size = args.image_size or (32 if args.quick else 128 if args.family == "cnn" else 64)
    epochs = args.epochs or (2 if args.family == "cnn" else 15)
    c.header(f"profile of one trial ({args.family})", args)
    data, folder = c.data_folder(args), c.workdir(args, "profile")
    study = {
        "name": "profiled", "data": str(data), "search_space": _space(args.family),
        "family": "baseline_cnn" if args.family == "cnn" else "resnet50v2_head",
        "oracle": {"type": "random", "max_trials": 1, "epochs": epochs},
        "early_stopping": {"monitor": "val_auc", "patience": epochs}, "seed": 42, "image_size": size,
        "normalization": "dataset" if args.family == "cnn" else "fixed", "leak_check": "off",
        "augmentation": {"rotation": 10, "shift": 0.1, "zoom": 0.1},
    }
    if args.family == "head":
        study.update(weights="none", feature_cache={"enabled": True, "views": 4})
    path = c.write_yaml(folder / "profiled.yaml", study)
    from hpstudy.study import run_study

    print("-- warm-up trial (not profiled)", flush=True)
    run_study(path, overwrite=True)
    print("-- profiled trial", flush=True)
    profile = cProfile.Profile()
    with c.timer() as t:
        profile.runcall(run_study, path, overrides=["oracle.max_trials=2"])
    profile.dump_stats(str(folder / "trial.prof"))
    print(f"profile saved to {folder / 'trial.prof'} (python -m pstats)")
    _report(profile, t[0], args.top)


def _name(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    return f"{filename.rsplit('/', 1)[-1]}:{function}" if filename != "~" else function


def _report(profile: cProfile.Profile, seconds: float, top: int) -> None:
    stats = pstats.Stats(profile)
    rows = stats.stats  # type: ignore[attr-defined]
    print(f"\n-- buckets (cumulative seconds of a run_study that resumes the study and runs 1 trial: {seconds:.1f} s)")
    for label, needle in _BUCKETS:
        total = max((ct for key, (_, _, _, ct, _) in rows.items() if needle in _name(key)), default=0.0)
        print(f"{label:45s} {total:7.2f} s  {total / seconds:6.1%}")
    print("\n-- Python calls into the input pipeline during the trial (traced once per dataset, not per image)")
    for key, (_cc, nc, _tt, ct, _) in sorted(rows.items(), key=lambda item: -item[1][1]):
        if key[0].endswith(_PIPELINE):
            print(f"{nc:6d} calls  {ct:6.2f} s  {_name(key)}")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
    print(f"\n-- top {top} by cumulative time")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


if __name__ == "__main__":
    main()
