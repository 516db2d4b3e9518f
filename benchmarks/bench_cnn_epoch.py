"""CNN epoch time: image_dataset_from_directory (naive) vs hpstudy's pipeline vs the in-memory floor.

One training epoch (no validation) of the same 3-block baseline CNN (the defaults of
search_spaces/baseline_cnn.yaml) over the training split, three ways:

* naive    — ``keras.utils.image_dataset_from_directory`` (decodes and resizes every file every epoch,
             no cache) with the augmentation as Keras layers inside the model (RandomRotation,
             RandomTranslation, RandomZoom) and a Rescaling layer;
* hpstudy  — the images decoded once (``prepare_data``, cached ``.npz``), then ``make_dataset``:
             seeded shuffle, one gather per batch, vectorized augmentation (one affine resampling),
             train-fitted normalization, prefetch;
* floor    — ``model.fit`` on ready, normalized in-memory tensors (no decoding, no augmentation):
             what the model's compute alone costs.

Each side gets a warm-up epoch (tracing), then the sides are timed in interleaved rounds, so shared
load on the machine hits all three alike; the medians are compared.

    python benchmarks/bench_cnn_epoch.py            # xray-course, 128 px, 3 rounds
    python benchmarks/bench_cnn_epoch.py --quick    # xray-sample, 64 px, 1 round
"""

from __future__ import annotations

import _common as c  # noqa: I001 - sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads

BATCH = 32


def _core(input_shape, seed: int):
    """The baseline CNN at the defaults of the project's search space (fresh, seeded)."""
    import keras
    import keras_tuner as kt

    from hpstudy.config import load_search_space
    from hpstudy.models import BaselineCNN

    keras.utils.set_random_seed(seed)
    space = load_search_space(c.ROOT / "search_spaces" / "baseline_cnn.yaml")
    hypermodel = BaselineCNN(space, input_shape=input_shape)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return hypermodel.build(hp)


def _naive_model(input_shape, seed: int):
    import keras

    from hpstudy.models import compile_classifier, make_optimizer

    core = _core(input_shape, seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed)(inputs)
    x = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed)(x)
    x = keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed)(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    return compile_classifier(keras.Model(inputs, core(x)), optimizer=make_optimizer("adam", 1e-3))


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 128, --quick 64)")
    p.add_argument("--rounds", type=int, default=None, help="timed epochs per side (default 3, --quick 1)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    size = args.image_size or (64 if args.quick else 128)
    rounds = args.rounds or (1 if args.quick else 3)
    c.header("CNN epoch time: naive vs hpstudy pipeline vs in-memory floor", args)
    data, folder = c.data_folder(args), c.workdir(args, "cnn-epoch")

    import keras
    import tensorflow as tf

    from hpstudy.config.settings import Augmentation
    from hpstudy.data.discover import resolve_source
    from hpstudy.data.pipeline import make_dataset
    from hpstudy.data.prepare import prepare_data

    source = resolve_source(data)
    with c.timer() as decode:
        prepared = prepare_data(source, image_size=(size, size), normalization="dataset", leak_check="off",
                                cache_dir=folder / "cache")
    n = len(prepared.y_train)
    print(f"data: {data} ({n} training images at {size} px); decoding once for hpstudy: {decode[0]:.1f} s "
          f"(then cached in {folder / 'cache'})", flush=True)
    shape = prepared.input_shape
    augmentation = Augmentation(rotation=10, shift=0.1, zoom=0.1)
    negative = next(name for name in source.class_names if name != source.positive_class)
    naive_data = keras.utils.image_dataset_from_directory(
        data / "train", label_mode="binary", class_names=[negative, source.positive_class],
        color_mode="grayscale", batch_size=BATCH, image_size=(size, size), shuffle=True, seed=args.seed)
    ours = make_dataset(prepared.x_train, prepared.y_train, batch_size=BATCH, normalizer=prepared.normalizer,
                        training=True, augmentation=augmentation, seed=args.seed)
    x_ready = tf.constant(prepared.normalizer.apply(prepared.x_train))
    y_ready = tf.constant(prepared.y_train)
    models = {"naive": _naive_model(shape, args.seed), "hpstudy": _core(shape, args.seed),
              "floor": _core(shape, args.seed)}
    sides = {
        "naive": lambda: models["naive"].fit(naive_data, epochs=1, verbose=0),
        "hpstudy": lambda: models["hpstudy"].fit(ours, epochs=1, verbose=0),
        "floor": lambda: models["floor"].fit(x_ready, y_ready, batch_size=BATCH, shuffle=True, epochs=1, verbose=0),
    }
    print("warm-up epoch per side (tracing, not counted)", flush=True)
    c.interleaved(sides, 1)
    print(f"timed: {rounds} round(s), sides interleaved", flush=True)
    times = c.interleaved(sides, rounds)
    _report({name: c.median(t) for name, t in times.items()}, n)


def _report(median: dict[str, float], n: int) -> None:
    print("\n-- median epoch time (training only, no validation)")
    for name, seconds in median.items():
        print(f"{name:8s} {seconds:7.2f} s  ({n / seconds:6.1f} images/s)")
    vs_naive, vs_floor = median["hpstudy"] / median["naive"], median["hpstudy"] / median["floor"]
    print(f"hpstudy / naive = {vs_naive:.2f} (target <= 1.00: {'met' if vs_naive <= 1.0 else 'NOT met'}); "
          f"naive / hpstudy = {1 / vs_naive:.2f}x")
    print(f"hpstudy / floor = {vs_floor:.2f} (target <= 1.15: {'met' if vs_floor <= 1.15 else 'NOT met'})")
    print(f"naive / floor   = {median['naive'] / median['floor']:.2f}")


if __name__ == "__main__":
    main()
