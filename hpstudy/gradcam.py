"""Grad-CAM on the logit of a Keras classifier, nested backbones included; overlays and figures.

Grad-CAM (Selvaraju et al., 2017) weights each channel ``k`` of a convolutional activation
``A`` (shape ``h x w x K``) by the spatial mean of the gradient of a class score ``y``:

    alpha_k = 1/(h*w) * sum_ij dy/dA_ij^k,     cam = ReLU(sum_k alpha_k A^k),

then normalizes each map by its own maximum, so every map spans 0..1 whatever the scale of the logit
(an absolute ``max + 1e-7``, the keras-io recipe, shrinks a weak model's map towards 0: with the logit
scaled by 1e-5 its maximum was 0.02-0.04). A map whose maximum is not above ``rtol`` times the largest
absolute pre-ReLU value of the same image carries no positive evidence: it stays all zero and is flagged
(``empty_maps``; logged, and said in the figure's title). The score is the *logit*
(pre-sigmoid / pre-softmax), never the probability, whose gradient vanishes where the model
is confident. ``heatmap`` is pure (model and images in, maps out); overlays and figures are drawn in
``hpstudy.gradcam_figures``.

Nested models (a ``ResNet50V2`` used as a layer) hide their inner layers from the outer graph,
so ``keras.Model(model.inputs, inner_layer.output)`` fails with "Graph disconnected". We rebuild
the forward pass instead: the outer graph is re-run with ``keras.models.clone_model`` sharing
every layer (no new weights), and the call of the backbone is replaced by a model that returns
both the inner activation and the backbone output (recursively for deeper nesting).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

log = logging.getLogger("hpstudy")

__all__ = ["find_last_conv_layer", "heatmap", "empty_maps", "resize_heatmap", "outcome_groups", "pointing_game"]

_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
         keras.layers.Conv2DTranspose)
_NOT_CANDIDATES = (keras.layers.InputLayer, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                   keras.layers.Dropout)
_EXPLAIN = ("positive", "negative")
_BATCH = 32


# --------------------------------------------------------------------------- layer discovery

def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _walk(model: keras.Model, prefix: str = "") -> list[tuple[str, keras.layers.Layer]]:
    """All layers in forward order as ``(path, layer)``; nested models are expanded in place."""
    found: list[tuple[str, keras.layers.Layer]] = []
    for layer in _layers(model):
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            found.extend(_walk(layer, prefix=f"{path}/"))
        else:
            found.append((path, layer))
    return found


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # never called, or shared between several calls
        return None


def _conv_candidates(model: keras.Model) -> list[str]:
    """Paths of the layers with a 4-D output at or after the first convolution, in forward order."""
    walked = _walk(model)
    first_conv = next((i for i, (_, layer) in enumerate(walked) if isinstance(layer, _CONV)), None)
    if first_conv is None:
        return []
    return [path for path, layer in walked[first_conv:]
            if not isinstance(layer, _NOT_CANDIDATES) and _output_rank(layer) == 4]


def find_last_conv_layer(model: keras.Model) -> str:
    """Name of the last convolutional feature map of ``model``, searching inside nested models.

    The answer is the last layer, in forward order, with a 4-D output ``(N, h, w, K)`` at or
    after the first convolution, skipping pooling and dropout: the activation (or batch norm, or
    residual sum) that follows the last convolution, i.e. the highest-level map at full
    resolution. For ``ResNet50V2`` that is ``post_relu``.

    Args:
        model: a built Functional or Sequential Keras model.

    Returns:
        The layer name; a layer of a nested model is named ``"<nested model>/<layer>"``.

    Raises:
        ValueError: the model has no convolutional layer with a 4-D output.
    """
    candidates = _conv_candidates(model)
    if not candidates:
        raise ValueError(f"model '{model.name}' has no convolutional layer with a 4-D output "
                         "(N, h, w, channels): Grad-CAM needs one")
    return candidates[-1]


def _resolve_layer(model: keras.Model, layer: str | None) -> list[str]:
    """The path of ``layer`` as a list of names; a bare inner name is accepted if unique."""
    if layer is None:
        return find_last_conv_layer(model).split("/")
    paths = [path for path, _ in _walk(model)]
    if layer in paths:
        matches = [layer]
    else:
        matches = [path for path in paths if path.rsplit("/", 1)[-1] == layer]
    if len(matches) != 1:
        reason = "is ambiguous" if matches else "is not a layer of"
        shown = ", ".join(repr(c) for c in (matches or _conv_candidates(model)[-5:]))
        raise ValueError(f"layer {layer!r} {reason} model '{model.name}'; candidates include: {shown}")
    found = dict(_walk(model))[matches[0]]
    if _output_rank(found) != 4:
        raise ValueError(f"layer {matches[0]!r} of model '{model.name}' has no 4-D output (N, h, w, channels)")
    return matches[0].split("/")


# --------------------------------------------------------------------------- graph rebuilding

def _run(model: keras.Model, inputs: Any, call: Callable[..., Any]) -> Any:
    """Re-run the graph of ``model`` on symbolic ``inputs``, calling each (shared) layer through ``call``."""
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in _layers(model):
            x = call(layer, x)
        return x
    if isinstance(model.input, (list, tuple)):
        inputs = type(model.input)([inputs])
    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer,
                                     call_function=call)
    return clone.outputs[0] if len(clone.outputs) == 1 else clone.outputs


def _symbolic_input(model: keras.Model) -> keras.KerasTensor:
    if len(model.inputs) != 1:
        raise ValueError(f"model '{model.name}' has {len(model.inputs)} inputs: Grad-CAM needs exactly one")
    ref = model.inputs[0]
    return keras.Input(batch_shape=ref.shape, dtype=ref.dtype)


def _tap(model: keras.Model, path: list[str], taps: dict[str, Any], score_layer: str | None = None) -> Any:
    """Run ``model`` on a fresh input, recording the activation at ``path`` and the score source.

    ``taps["conv"]`` receives the activation; ``taps["score_in"]`` the input and
    ``taps["score_out"]`` the output of the layer named ``score_layer``. Returns the outputs.
    """
    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer.name == path[0] and len(path) > 1:
            inner: dict[str, Any] = {}
            inner_out = _tap(layer, path[1:], inner)
            tapped = keras.Model(inner["input"], [inner["conv"], inner_out], name=f"{layer.name}_tapped")
            taps["conv"], out = tapped(*args, **kwargs)
            return out
        out = layer(*args, **kwargs)
        if layer.name == path[0]:
            taps["conv"] = out
        if layer.name == score_layer:
            taps["score_in"], taps["score_out"] = args[0], out
        return out

    taps["input"] = _symbolic_input(model)
    return _run(model, taps["input"], call)


def _score_source(model: keras.Model) -> tuple[str | None, str]:
    """Which tensor holds the logit: ``(layer name, "output" | "input" | "dense")``.

    ``"output"``: the layer's output is the logit (a layer named ``logit``, or the model output
    as a fallback: then the score is the probability). ``"input"``: the input of a final sigmoid
    or softmax ``Activation``. ``"dense"``: the input of a final ``Dense`` with a sigmoid or
    softmax activation, whose pre-activation is recomputed from its kernel and bias.
    """
    names = {layer.name for layer in _layers(model)}
    if "logit" in names:
        return "logit", "output"
    last = _layers(model)[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if activation in ("sigmoid", "softmax"):
        return last.name, "dense" if isinstance(last, keras.layers.Dense) else "input"
    return last.name, "output"


def _tapped_model(model: keras.Model, path: list[str]) -> tuple[keras.Model, Callable[[Any], Any]]:
    """A model ``x -> [conv activation, score tensor]`` and the function mapping that tensor to logits."""
    score_layer, kind = _score_source(model)
    taps: dict[str, Any] = {}
    _tap(model, path, taps, score_layer=score_layer)
    if "conv" not in taps:
        raise ValueError(f"layer {'/'.join(path)!r} is not called in the forward pass of model '{model.name}'")
    source = taps["score_out"] if kind == "output" else taps["score_in"]
    tapped = keras.Model(taps["input"], [taps["conv"], source], name=f"{model.name}_gradcam")
    if kind != "dense":
        return tapped, lambda t: t
    dense = model.get_layer(score_layer)

    def pre_activation(features: Any) -> Any:
        logits = keras.ops.matmul(keras.ops.cast(features, "float32"), keras.ops.cast(dense.kernel, "float32"))
        return logits + keras.ops.cast(dense.bias, "float32") if dense.use_bias else logits

    return tapped, pre_activation


# --------------------------------------------------------------------------- heat maps

def _check_images(model: keras.Model, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (N, H, W, C), got shape {images.shape}")
    expected = tuple(model.inputs[0].shape[1:])
    for axis, (want, got) in enumerate(zip(expected, images.shape[1:]), start=1):
        if want is not None and want != got:
            raise ValueError(f"images must have shape (N, {', '.join(str(e) for e in expected)}) for model "
                             f"'{model.name}', got {images.shape} (axis {axis})")
    if len(images) == 0:
        raise ValueError("images is empty")
    return images.astype("float32")


def _class_column(n_out: int, class_index: int | None, explain: str) -> tuple[int, float]:
    """Column of the logit to explain and its sign (+1 positive, -1 counterfactual)."""
    if explain not in _EXPLAIN:
        raise ValueError(f"explain must be one of {_EXPLAIN}, got {explain!r}")
    sign = 1.0 if explain == "positive" else -1.0
    if n_out == 1:
        if class_index not in (None, 0, 1):
            raise ValueError(f"a single-output model has classes 0 and 1, got class_index={class_index}")
        if class_index is not None and explain == "negative":
            raise ValueError("give either class_index or explain='negative' for a single-output model, not both")
        return 0, (-1.0 if class_index == 0 else sign)
    if class_index is None:
        raise ValueError(f"the model has {n_out} outputs (softmax): class_index is required")
    if not 0 <= class_index < n_out:
        raise ValueError(f"class_index must be in [0, {n_out}), got {class_index}")
    return class_index, sign


def heatmap(model: keras.Model, images: np.ndarray, *, layer: str | None = None, class_index: int | None = None,
            explain: str = "positive", rtol: float = 1e-6) -> np.ndarray:
    """Grad-CAM maps of ``images`` at the resolution of a convolutional layer.

    With ``A`` the activation of ``layer`` and ``y`` the score explained::

        alpha_k = mean_ij dy/dA_ij^k,   s = sum_k alpha_k A^k,   cam = ReLU(s),   map = cam / max(cam)

    per image, when ``max(cam) > rtol * max|s|``: scale-free, so the map of a logit scaled by 1e-5 is the
    map of the unscaled logit. Otherwise (no positive evidence for the explained class, or only rounding
    noise) the map is all zero; ``empty_maps`` flags it and a warning is logged. The score ``y`` is the
    logit: the output of the layer named ``logit``, else the input of a final sigmoid/softmax
    activation; only when neither exists is it the probability. For a single-output (sigmoid) model ``y = logit`` with
    ``explain="positive"`` and ``y = -logit`` with ``explain="negative"`` (what speaks for the
    negative class); ``class_index`` 1 or 0 is an alias for those. For a softmax model ``y`` is the
    logit of ``class_index`` (negated with ``explain="negative"``). Inference mode (dropout off,
    batch norm with moving statistics). Uses the TensorFlow backend's ``GradientTape``.

    Args:
        model: the classifier; a backbone nested as a layer is supported.
        images: ``(N, H, W, C)`` array, preprocessed exactly as for ``model.predict``.
        layer: the convolutional layer (``"backbone/layer"`` for a nested one, or its bare name if
            unique); default ``find_last_conv_layer(model)``.
        class_index: the class of a softmax model (required there).
        explain: ``"positive"`` or ``"negative"``.
        rtol: relative tolerance below which a map counts as empty (> 0).

    Returns:
        ``(N, h, w)`` float32 maps in ``[0, 1]``.

    Raises:
        ValueError: images not 4-D or not matching the model input; unknown layer (the message lists
            candidates); missing or invalid ``class_index``; invalid ``explain`` or ``rtol``.
    """
    import tensorflow as tf

    if not 0.0 < rtol < 1.0:
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    images = _check_images(model, images)
    column, sign = _class_column(int(model.outputs[0].shape[-1]), class_index, explain)
    tapped, to_logits = _tapped_model(model, _resolve_layer(model, layer))
    maps = []
    for start in range(0, len(images), _BATCH):
        batch = tf.constant(images[start:start + _BATCH])
        with tf.GradientTape() as tape:
            conv, source = tapped(batch, training=False)
            score = sign * tf.cast(to_logits(source)[:, column], "float32")
        # Each score depends only on its own image, so the gradient of the sum is per-image.
        grads = tf.cast(tape.gradient(score, conv), "float32")
        alpha = tf.reduce_mean(grads, axis=(1, 2))
        maps.append(tf.einsum("nhwk,nk->nhw", tf.cast(conv, "float32"), alpha).numpy())
    return _normalize(np.concatenate(maps), rtol)


def _normalize(summed: np.ndarray, rtol: float) -> np.ndarray:
    """``ReLU(s) / max(ReLU(s))`` per map when that maximum is above ``rtol * max|s|``; else all zero."""
    cam = np.maximum(summed.astype("float64"), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    scale = np.abs(summed).max(axis=(1, 2), keepdims=True).astype("float64")
    kept = (peak > rtol * scale) & (peak > 0)
    out = np.where(kept, cam / np.where(kept, peak, 1.0), 0.0).astype("float32")
    empty = int((~kept).sum())
    if empty:
        log.warning("warning: %d of %d Grad-CAM map(s) are all zero (no positive evidence for the explained class "
                    "at this layer); they are drawn empty and flagged", empty, len(out))
    return out


def empty_maps(maps: np.ndarray) -> np.ndarray:
    """Which maps of ``heatmap`` are flagged empty (all zero): ``(N,)`` bool for ``(N, h, w)`` maps."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {maps.shape}")
    return ~(maps > 0).any(axis=(1, 2))


def resize_heatmap(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of maps ``(N, h, w)`` or one map ``(h, w)`` to ``size = (H, W)``; stays in ``[0, 1]``."""
    maps = np.asarray(maps, dtype="float32")
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be (h, w) or (N, h, w), got shape {maps.shape}")
    single = maps.ndim == 2
    stack = maps[None] if single else maps
    if stack.shape[1:] == tuple(size):
        out = stack.copy()
    else:
        resized = keras.ops.image.resize(stack[..., None], tuple(size), interpolation="bilinear",
                                         data_format="channels_last")
        out = np.clip(keras.ops.convert_to_numpy(resized)[..., 0], 0.0, 1.0)
    return out[0] if single else out


# --------------------------------------------------------------------------- groups and localisation

def outcome_groups(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Indices of the true/false positives/negatives; predicted positive when ``y_prob >= threshold``.

    Returns:
        ``{"tp", "tn", "fp", "fn"}`` -> sorted index arrays that partition ``range(len(y_true))``.

    Raises:
        ValueError: shapes differ, or labels are not 0/1.
    """
    y_true, y_prob = np.asarray(y_true).reshape(-1), np.asarray(y_prob, dtype="float64").reshape(-1)
    if y_true.shape != y_prob.shape:
        raise ValueError(f"y_true and y_prob must have the same length, got {len(y_true)} and {len(y_prob)}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(y_true).tolist()))}")
    truth, pred = y_true == 1, y_prob >= threshold  # the rule of evaluate.binary_metrics
    return {"tp": np.flatnonzero(truth & pred), "tn": np.flatnonzero(~truth & ~pred),
            "fp": np.flatnonzero(~truth & pred), "fn": np.flatnonzero(truth & ~pred)}


def pointing_game(maps: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], *,
                  size: tuple[int, int] | None = None) -> np.ndarray:
    """Whether the maximum of each map falls inside its box (Zhang et al., 2016, without tolerance).

    Boxes are ``(y0, x0, y1, x1)`` pixel coordinates, half-open like slicing (``y0 <= y < y1``),
    in the map's own grid, or in a ``size = (H, W)`` frame (e.g. the image's) to which the maps are
    bilinearly resized first. The maximum is ``np.argmax``'s: the first one in row-major order.

    Returns:
        ``(N,)`` bool array.

    Raises:
        ValueError: maps not ``(N, h, w)``, or not one box per map.
    """
    maps = np.asarray(maps, dtype="float32")
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {maps.shape}")
    if len(boxes) != len(maps):
        raise ValueError(f"need one box per map: {len(maps)} maps, {len(boxes)} boxes")
    if size is not None:
        maps = resize_heatmap(maps, size)
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    ys, xs = np.unravel_index(flat, maps.shape[1:])
    box = np.asarray(boxes, dtype="int64").reshape(-1, 4)
    return (box[:, 0] <= ys) & (ys < box[:, 2]) & (box[:, 1] <= xs) & (xs < box[:, 3])
