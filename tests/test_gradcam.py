"""Grad-CAM: exact maps on hand-built models, nested backbones, overlays, groups and figures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import colormaps

from hpstudy import gradcam as gc
from hpstudy import gradcam_figures as gf
from hpstudy.metrics import binary_metrics

L = keras.layers


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


def _head(x: keras.KerasTensor, w: list[float], bias: float = 0.0) -> keras.KerasTensor:
    """GAP -> Dense(1) "logit" with fixed weights -> sigmoid "probability" (the project convention)."""
    x = L.GlobalAveragePooling2D()(x)
    logit = L.Dense(1, name="logit")
    x = logit(x)
    logit.set_weights([np.asarray(w, dtype="float32").reshape(-1, 1), np.asarray([bias], dtype="float32")])
    return L.Activation("sigmoid", name="probability", dtype="float32")(x)


def _identity_model(w: list[float], size: int = 4) -> keras.Model:
    """Input (size, size, 2) -> 1x1 identity conv "conv" (A_k = x_k) -> GAP -> logit = sum_k w_k mean(A_k)."""
    inputs = keras.Input((size, size, 2))
    conv = L.Conv2D(2, 1, use_bias=False, name="conv")
    x = conv(inputs)
    conv.set_weights([np.eye(2, dtype="float32").reshape(1, 1, 2, 2)])
    return keras.Model(inputs, _head(x, w))


def _expected(x: np.ndarray, w: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """The hand computation: alpha_k = sign * w_k / 16, cam = ReLU(sum_k alpha_k x_k), divided by its max."""
    cam = np.maximum(np.einsum("nhwk,k->nhw", x, sign * w / 16.0), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)


def _reference_cam(model: keras.Model, layer: str, x: np.ndarray) -> np.ndarray:
    """The keras-io recipe on a flat model: gradient of the logit w.r.t. ``layer``'s output."""
    grad_model = keras.Model(model.input, [model.get_layer(layer).output, model.get_layer("logit").output])
    with tf.GradientTape() as tape:
        conv, logit = grad_model(x, training=False)
        score = logit[:, 0]
    alpha = tf.reduce_mean(tape.gradient(score, conv), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", conv, alpha)).numpy()
    return cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-7)


# --------------------------------------------------------------------------- (a) known answers

def test_identity_model_gives_the_hand_computed_map() -> None:
    w = np.array([1.0, -2.0], dtype="float32")
    x = np.random.default_rng(1).uniform(0.0, 1.0, size=(3, 4, 4, 2)).astype("float32")
    model = _identity_model(w.tolist())
    maps = gc.heatmap(model, x)
    assert maps.shape == (3, 4, 4) and maps.dtype == np.float32
    expected = _expected(x, w)
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU matters for this input
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    np.testing.assert_allclose(gc.heatmap(model, x, explain="negative"), _expected(x, w, sign=-1.0), atol=1e-5)
    np.testing.assert_allclose(gc.heatmap(model, x, class_index=0), _expected(x, w, sign=-1.0), atol=1e-5)


def test_score_is_the_logit_not_the_saturated_probability() -> None:
    # logit ~ 400: the float32 sigmoid is exactly 1 and its gradient 0; the logit's gradient is not.
    w = np.array([1000.0, 500.0], dtype="float32")
    x = np.random.default_rng(2).uniform(0.2, 1.0, size=(1, 4, 4, 2)).astype("float32")
    model = _identity_model(w.tolist())
    assert float(model(x)[0, 0]) == 1.0
    np.testing.assert_allclose(gc.heatmap(model, x), _expected(x, w), atol=1e-5)


def test_all_zero_map_stays_zero_and_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    model = _identity_model([1.0, 1.0])
    x = np.ones((2, 4, 4, 2), dtype="float32")
    x[0] = -1.0  # cam = ReLU(negative) = 0 for the first image only
    capsys.readouterr()
    maps = gc.heatmap(model, x)
    assert np.isfinite(maps).all() and (maps[0] == 0).all() and maps[1].max() == 1.0
    assert gc.empty_maps(maps).tolist() == [True, False]
    assert "1 of 2 Grad-CAM map(s) are all zero" in capsys.readouterr().out


def test_normalization_is_scale_free() -> None:
    """A logit scaled by 1e-5 gives the same map (the old ``max + 1e-7`` gave maxima of 0.70-0.79 here)."""
    w = np.array([1.0, -2.0], dtype="float32")
    x = np.random.default_rng(14).uniform(0.0, 1.0, size=(3, 4, 4, 2)).astype("float32")
    strong, weak = gc.heatmap(_identity_model(w.tolist()), x), gc.heatmap(_identity_model((w * 1e-5).tolist()), x)
    expected = _expected(x, w)
    assert np.allclose(expected.max(axis=(1, 2)), 1.0) and (expected == 0).any()
    np.testing.assert_allclose(weak, expected, atol=1e-5)
    np.testing.assert_allclose(weak, strong, atol=1e-5)
    assert not gc.empty_maps(weak).any()


def test_rounding_noise_below_the_relative_tolerance_counts_as_empty() -> None:
    summed = np.zeros((2, 4, 4), dtype="float32")
    summed[0] = -1.0
    summed[0, 0, 0] = 1e-8  # positive part 1e-8 of the largest absolute value: noise, not evidence
    summed[1] = -1.0
    summed[1, 0, 0] = 1e-3
    maps = gc._normalize(summed, 1e-6)
    assert gc.empty_maps(maps).tolist() == [True, False] and maps[1, 0, 0] == 1.0
    with pytest.raises(ValueError, match=r"rtol must be in \(0, 1\)"):
        gc.heatmap(_identity_model([1.0, 1.0]), np.ones((1, 4, 4, 2), "float32"), rtol=0.0)


def _two_halves_model() -> keras.Model:
    """Channel 0 = ReLU(x) (bright), channel 1 = ReLU(-x) (dark); logit = mean(bright) - mean(dark)."""
    inputs = keras.Input((8, 8, 1))
    conv = L.Conv2D(2, 1, use_bias=False, activation="relu", name="conv")
    x = conv(inputs)
    conv.set_weights([np.array([1.0, -1.0], dtype="float32").reshape(1, 1, 1, 2)])
    return keras.Model(inputs, _head(x, [1.0, -1.0]))


def test_the_half_that_drives_the_logit_holds_the_peak() -> None:
    rng = np.random.default_rng(3)
    x = np.zeros((2, 8, 8, 1), dtype="float32")
    x[:, :, :4] = rng.uniform(0.5, 1.0, size=(2, 8, 4, 1))     # left: bright, raises the logit
    x[:, :, 4:] = -rng.uniform(0.5, 1.0, size=(2, 8, 4, 1))    # right: dark, lowers it
    model = _two_halves_model()
    positive, negative = gc.heatmap(model, x), gc.heatmap(model, x, explain="negative")
    assert (positive[:, :, 4:] == 0).all() and (positive[:, :, :4] > 0).all()
    assert (negative[:, :, :4] == 0).all() and (negative[:, :, 4:] > 0).all()
    np.testing.assert_allclose(positive.max(axis=(1, 2)), 1.0, atol=1e-5)
    left = [(0, 0, 8, 4)] * 2
    assert gc.pointing_game(positive, left).all() and not gc.pointing_game(negative, left).any()


def test_softmax_model_explains_the_pre_softmax_logit_of_the_class() -> None:
    w = np.array([[1.0, -1.0, 0.5], [-2.0, 1.0, 0.5]], dtype="float32")  # channels x classes
    x = np.random.default_rng(4).uniform(0.0, 1.0, size=(2, 4, 4, 2)).astype("float32")
    models = []
    for final in ("activation", "dense"):
        inputs = keras.Input((4, 4, 2))
        conv = L.Conv2D(2, 1, use_bias=False, name="conv")
        h = L.GlobalAveragePooling2D()(conv(inputs))
        dense = L.Dense(3, activation=None if final == "activation" else "softmax", name="scores")
        h = dense(h)
        outputs = L.Activation("softmax")(h) if final == "activation" else h
        models.append(keras.Model(inputs, outputs))
        conv.set_weights([np.eye(2, dtype="float32").reshape(1, 1, 2, 2)])
        dense.set_weights([w, np.zeros(3, dtype="float32")])
    for model in models:
        with pytest.raises(ValueError, match="class_index is required"):
            gc.heatmap(model, x)
        for c in range(3):
            np.testing.assert_allclose(gc.heatmap(model, x, class_index=c), _expected(x, w[:, c]), atol=1e-5)


# --------------------------------------------------------------------------- (b) nested backbones

def _backbone() -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(6, 3, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="act")(x)
    return keras.Model(inputs, x, name="backbone")


def _classifier(backbone: keras.Model) -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    x = backbone(inputs)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(8, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(1, name="logit")(x)
    return keras.Model(inputs, L.Activation("sigmoid", name="probability", dtype="float32")(x))


def _flat_twin(model: keras.Model) -> keras.Model:
    """The same network without nesting (fresh layers, copied weights): the keras-io recipe works on it."""
    x = inputs = keras.Input((16, 16, 1))
    for source in model.get_layer("backbone").layers[1:] + model.layers[2:]:  # skip the InputLayers
        twin = source.__class__.from_config(source.get_config())
        x = twin(x)
        twin.set_weights(source.get_weights())
    return keras.Model(inputs, x)


def _nested_model() -> keras.Model:
    model = _classifier(_backbone())
    bn = model.get_layer("backbone").get_layer("bn")
    rng = np.random.default_rng(5)  # moving statistics far from a batch's: catches training-mode calls
    bn.set_weights([rng.uniform(0.5, 2.0, 6), rng.normal(0, 0.5, 6), rng.normal(0, 0.5, 6), rng.uniform(0.2, 3, 6)])
    return model


def test_nested_backbone_layer_is_found_and_named_with_its_path() -> None:
    model = _nested_model()
    assert gc.find_last_conv_layer(model) == "backbone/act"
    assert gc.find_last_conv_layer(_flat_twin(model)) == "act"


def test_rebuilt_graph_reproduces_the_models_logits() -> None:
    model = _nested_model()
    x = np.random.default_rng(6).normal(size=(5, 16, 16, 1)).astype("float32")
    tapped, to_logits = gc._tapped_model(model, ["backbone", "act"])
    conv, source = tapped(x, training=False)
    logits = keras.Model(model.input, model.get_layer("logit").output)(x, training=False)
    inner = keras.Model(model.get_layer("backbone").input, model.get_layer("backbone").get_layer("act").output)
    np.testing.assert_allclose(np.asarray(to_logits(source)), np.asarray(logits), atol=1e-5)
    np.testing.assert_allclose(np.asarray(conv), np.asarray(inner(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(source))), np.asarray(model(x)), atol=1e-5)


def test_nested_heatmap_equals_the_keras_io_recipe_on_the_flat_twin() -> None:
    model = _nested_model()
    flat = _flat_twin(model)
    x = np.random.default_rng(7).normal(size=(4, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(flat(x)), np.asarray(model(x)), atol=1e-5)
    maps = gc.heatmap(model, x)
    assert maps.shape == (4, 8, 8) and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps, _reference_cam(flat, "act", x), atol=1e-4)
    np.testing.assert_allclose(gc.heatmap(model, x, layer="act"), maps, atol=1e-6)  # a unique bare name
    np.testing.assert_allclose(gc.heatmap(flat, x), maps, atol=1e-4)


def test_sequential_model_with_a_nested_backbone() -> None:
    backbone = _backbone()
    model = keras.Sequential([keras.Input((16, 16, 1)), backbone, L.GlobalAveragePooling2D(),
                              L.Dense(1, activation="sigmoid")])
    x = np.random.default_rng(8).normal(size=(2, 16, 16, 1)).astype("float32")
    flat = keras.Model(backbone.input, backbone.output)
    dense = model.layers[-1]
    features = keras.ops.mean(flat(x), axis=(1, 2))
    # Dense(sigmoid): the logit is recomputed from kernel and bias; check it against the probability.
    tapped, to_logits = gc._tapped_model(model, ["backbone", "act"])
    logits = np.asarray(to_logits(tapped(x)[1]))
    np.testing.assert_allclose(logits, np.asarray(features) @ dense.kernel.numpy() + dense.bias.numpy(), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), np.asarray(model(x)), atol=1e-5)
    assert gc.heatmap(model, x).shape == (2, 8, 8)


def test_resnet50v2_backbone_nested_in_a_classifier() -> None:
    backbone = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    x = L.GlobalAveragePooling2D()(backbone(inputs))
    x = L.Dropout(0.3)(L.Dense(16, activation="relu")(x))
    x = L.Dense(1, name="logit")(x)
    model = keras.Model(inputs, L.Activation("sigmoid", name="probability", dtype="float32")(x))
    assert gc.find_last_conv_layer(model) == f"{backbone.name}/post_relu"
    images = np.random.default_rng(9).uniform(-1, 1, size=(2, 64, 64, 3)).astype("float32")
    tapped, to_logits = gc._tapped_model(model, [backbone.name, "post_relu"])
    logits = keras.Model(model.input, model.get_layer("logit").output)(images, training=False)
    np.testing.assert_allclose(np.asarray(to_logits(tapped(images, training=False)[1])), np.asarray(logits),
                               atol=1e-5)
    maps = gc.heatmap(model, images)
    assert maps.shape == (2, 2, 2) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


# --------------------------------------------------------------------------- input validation

def test_inputs_are_validated_with_clear_messages() -> None:
    model = _nested_model()
    good = np.zeros((1, 16, 16, 1), dtype="float32")
    with pytest.raises(ValueError, match=r"4-D \(N, H, W, C\)"):
        gc.heatmap(model, good[0])
    with pytest.raises(ValueError, match=r"shape \(N, 16, 16, 1\)"):
        gc.heatmap(model, np.zeros((1, 16, 16, 3), dtype="float32"))
    with pytest.raises(ValueError, match=r"'nope' is not a layer of model .*candidates include: .*'backbone/act'"):
        gc.heatmap(model, good, layer="nope")
    with pytest.raises(ValueError, match="no 4-D output"):
        gc.heatmap(model, good, layer="logit")
    with pytest.raises(ValueError, match="explain must be one of"):
        gc.heatmap(model, good, explain="both")
    with pytest.raises(ValueError, match="classes 0 and 1"):
        gc.heatmap(model, good, class_index=2)
    dense_only = keras.Sequential([keras.Input((4,)), L.Dense(1)], name="mlp")
    with pytest.raises(ValueError, match="model 'mlp' has no convolutional layer"):
        gc.find_last_conv_layer(dense_only)


# --------------------------------------------------------------------------- resize and overlay

def test_resize_heatmap_is_bilinear_and_stays_in_unit_range() -> None:
    maps = np.random.default_rng(10).uniform(0, 1, size=(3, 4, 4)).astype("float32")
    big = gc.resize_heatmap(maps, (32, 24))
    assert big.shape == (3, 32, 24) and big.min() >= 0 and big.max() <= 1
    assert gc.resize_heatmap(maps[0], (8, 8)).shape == (8, 8)
    np.testing.assert_allclose(gc.resize_heatmap(np.full((2, 2), 0.25), (7, 5)), 0.25, atol=1e-6)
    ramp = gc.resize_heatmap(np.array([[0.0, 1.0]]), (1, 4))[0]  # half-pixel centres: 0, 1/4, 3/4, 1
    np.testing.assert_allclose(ramp, [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_overlay_blends_on_the_original_scale_and_rescales_the_sum() -> None:
    image = np.array([[0.0, 255.0], [127.5, 51.0]], dtype="float32")  # 0..255 gray: kept, not stretched
    heat = np.array([[1.0, 0.0], [0.5, 0.0]], dtype="float32")
    out = gf.overlay(image, heat, alpha=0.4)
    jet = colormaps["jet"](heat)[..., :3]
    expected = (np.repeat((image / 255.0)[..., None], 3, axis=-1) + 0.4 * jet) / 1.4
    assert out.shape == (2, 2, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # a dim image is not stretched: the same pixel value gives the same overlay in any image
    np.testing.assert_allclose(gf.overlay(image * 0.2, heat)[0, 0], gf.overlay(np.zeros((2, 2)), heat)[0, 0])
    assert gf.overlay(np.zeros((8, 6, 1)), np.ones((2, 2))).shape == (8, 6, 3)  # heat is resized
    with pytest.raises(ValueError, match="heat must be a 2-D map"):
        gf.overlay(image, heat[None])
    with pytest.raises(ValueError, match="value_range"):
        gf.overlay(image, heat, value_range=(1.0, 1.0))


def test_overlay_saturates_no_pixel_that_was_not_saturated() -> None:
    rng = np.random.default_rng(15)
    image = rng.uniform(0.0, 254.0, size=(32, 32)).astype("float32")
    image[:4] = 255.0  # a saturated band
    out = gf.overlay(image, rng.uniform(0.0, 1.0, size=(8, 8)).astype("float32"), alpha=0.4)
    assert out[4:].max() < 1.0 and out.min() >= 0.0
    clipped = np.clip(image[..., None] / 255.0 + 0.4 * colormaps["jet"](rng.uniform(size=(32, 32)))[..., :3], 0, 1)
    assert (clipped[4:] == 1.0).any()  # what the clipping recipe did on the same image


# --------------------------------------------------------------------------- (d) groups and pointing game

@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0.0, 1.0)), min_size=1, max_size=40))
def test_outcome_groups_partition_the_indices(pairs: list[tuple[int, float]]) -> None:
    y_true = np.array([p[0] for p in pairs])
    y_prob = np.array([p[1] for p in pairs])
    groups = gc.outcome_groups(y_true, y_prob)
    joined = np.concatenate(list(groups.values()))
    assert sorted(joined.tolist()) == list(range(len(pairs)))
    metrics = binary_metrics(y_true, y_prob)
    assert {k: len(v) for k, v in groups.items()} == {k: metrics[k] for k in ("tp", "tn", "fp", "fn")}
    assert (y_true[groups["tp"]] == 1).all() and (y_prob[groups["tp"]] >= 0.5).all()
    assert (y_true[groups["fn"]] == 1).all() and (y_prob[groups["fn"]] < 0.5).all()


def test_outcome_groups_on_a_hand_made_example() -> None:
    groups = gc.outcome_groups(np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.5, 0.2, 0.1, 0.5]))
    assert {k: v.tolist() for k, v in groups.items()} == {"tp": [0, 4], "tn": [3], "fp": [1], "fn": [2]}
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        gc.outcome_groups(np.array([2]), np.array([0.5]))


def test_pointing_game_on_constructed_maps() -> None:
    maps = np.zeros((4, 10, 10), dtype="float32")
    maps[0, 2, 3] = 1.0   # inside (1, 2, 5, 6)
    maps[1, 8, 8] = 1.0   # outside
    maps[2, 5, 6] = 1.0   # on the exclusive edge y1=5, x1=6: outside
    maps[3, 1, 2] = 1.0   # on the inclusive corner: inside
    hits = gc.pointing_game(maps, [(1, 2, 5, 6)] * 4)
    assert hits.tolist() == [True, False, False, True]
    small = np.zeros((1, 2, 2), dtype="float32")
    small[0, 1, 1] = 1.0  # bottom-right quarter of a 20x20 image
    assert gc.pointing_game(small, [(10, 10, 20, 20)], size=(20, 20)).tolist() == [True]
    assert gc.pointing_game(small, [(0, 0, 10, 10)], size=(20, 20)).tolist() == [False]
    with pytest.raises(ValueError, match="one box per map"):
        gc.pointing_game(maps, [(0, 0, 1, 1)])


# --------------------------------------------------------------------------- figure

def test_plot_gradcam_grid_writes_a_readable_png(tmp_path) -> None:
    images = np.random.default_rng(11).uniform(0, 255, size=(3, 32, 32, 1)).astype("float32")
    maps = np.random.default_rng(12).uniform(0, 1, size=(3, 4, 4)).astype("float32")
    path = gf.plot_gradcam_grid(images, maps, ["a", "b", "c"], tmp_path / "g" / "tp.png", suptitle="TP")
    assert path == tmp_path / "g" / "tp.png" and path.stat().st_size > 0
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert [p.name for p in path.parent.iterdir()] == ["tp.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="as many images, maps and titles"):
        gf.plot_gradcam_grid(images, maps, ["a"], tmp_path / "x.png", suptitle="x")


def test_an_empty_map_is_said_so_in_the_figure_title(tmp_path, monkeypatch) -> None:
    images = np.random.default_rng(16).uniform(0, 255, size=(2, 32, 32, 1)).astype("float32")
    maps = np.zeros((2, 4, 4), dtype="float32")
    maps[1, 1, 1] = 1.0
    titles: list[str] = []
    original = gf.Figure.suptitle
    monkeypatch.setattr(gf.Figure, "suptitle",
                        lambda self, text, **kw: titles.append(text) or original(self, text, **kw))
    gf.plot_gradcam_grid(images, maps, ["a", "b"], tmp_path / "e.png", suptitle="TP")
    assert titles == ["TP [1 of 2 map(s) empty: flagged]"]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside keras saving
def test_a_saved_and_reloaded_nested_model_gives_the_same_maps(tmp_path) -> None:
    model = _nested_model()
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(13).normal(size=(2, 16, 16, 1)).astype("float32")
    assert gc.find_last_conv_layer(reloaded) == "backbone/act"
    np.testing.assert_allclose(gc.heatmap(reloaded, x), gc.heatmap(model, x), atol=1e-6)
