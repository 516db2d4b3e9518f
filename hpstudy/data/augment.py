"""Training-time augmentation as vectorized TensorFlow ops on whole batches.

One random affine transform (rotation, shift, zoom) per image, composed into a single projective
warp, plus brightness, contrast and an optional horizontal flip; everything runs in the ``tf.data``
graph (no Python per image). Applied to training batches only and before normalization
(``hpstudy.data.pipeline.make_dataset``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import tensorflow as tf

from hpstudy.config.settings import Augmentation

__all__ = ["make_augmenter", "single_transforms"]

_FILL_VALUE = 0.0  # constant (black) fill outside the rotated/shifted/zoomed image: see make_augmenter


_SINGLE = ("rotation", "shift", "zoom", "brightness", "contrast", "horizontal_flip")


class _Augmenter:
    """Random transforms of a batch (B, H, W, C) on 0..255, each image with its own parameters.

    Called with ``seed`` (int tensor of shape [2]) it is a pure function of (images, seed): this is
    how ``make_dataset`` uses it, with one seed per batch from a seeded ``tf.data`` random stream.
    Called without, it draws the seed from its own generator seeded at construction (previews).
    """

    def __init__(self, augmentation: Augmentation, seed: int) -> None:
        self.augmentation = augmentation
        self.seed = int(seed)
        self._generator: tf.random.Generator | None = None

    def __call__(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        single = images.shape.rank == 3
        x = tf.cast(images[None] if single else images, tf.float32)
        if seed is None:
            if self._generator is None:
                self._generator = tf.random.Generator.from_seed(self.seed)
            seed = self._generator.make_seeds(1)[:, 0]
        # One sub-seed per transform, so switching one off leaves the draws of the others unchanged.
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=len(_SINGLE))
        x = self._geometric(x, seeds)
        x = self._intensity(x, seeds)
        return x[0] if single else x

    def _uniform(self, x: tf.Tensor, seed: tf.Tensor, limit: float, shape: tuple[int, ...] = ()) -> tf.Tensor:
        return tf.random.stateless_uniform([tf.shape(x)[0], *shape], seed, -limit, limit)

    def _geometric(self, x: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        a = self.augmentation
        if a.rotation or a.shift or a.zoom:
            batch, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
            zeros = tf.zeros([batch])
            angle = self._uniform(x, seeds[0], a.rotation * math.pi / 180.0) if a.rotation else zeros
            shift = self._uniform(x, seeds[1], a.shift, (2,)) if a.shift else tf.zeros([batch, 2])
            scale = 1.0 + (self._uniform(x, seeds[2], a.zoom) if a.zoom else zeros)
            size = tf.cast(tf.stack([width, height]), tf.float32)
            x = tf.raw_ops.ImageProjectiveTransformV3(
                images=x, transforms=_affine(angle, shift * size, scale, size), output_shape=tf.shape(x)[1:3],
                fill_value=_FILL_VALUE, interpolation="BILINEAR", fill_mode="CONSTANT")
        if a.horizontal_flip:
            flip = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seeds[3]) < 0.5
            x = tf.where(flip, tf.reverse(x, axis=[2]), x)
        return x

    def _intensity(self, x: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        a = self.augmentation
        if a.brightness:
            delta = self._uniform(x, seeds[4], a.brightness * 255.0, (1, 1, 1))
            x = tf.clip_by_value(x + delta, 0.0, 255.0)
        if a.contrast:
            factor = 1.0 + self._uniform(x, seeds[5], a.contrast, (1, 1, 1))
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            x = tf.clip_by_value((x - mean) * factor + mean, 0.0, 255.0)
        return x


def _affine(angle: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """(B, 8) projective transforms mapping each OUTPUT pixel p to its source ``c + s R (p - c - t)``.

    ``c`` is the image centre, ``t`` the shift in pixels (x, y), ``R`` a rotation by ``angle`` and
    ``s`` the sampling scale (s < 1 zooms in, s > 1 zooms out).
    """
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    centre = (size - 1.0) / 2.0
    qx, qy = centre[0] + shift[:, 0], centre[1] + shift[:, 1]
    a2 = centre[0] - cos * qx - sin * qy
    b2 = centre[1] + sin * qx - cos * qy
    zeros = tf.zeros_like(angle)
    return tf.stack([cos, sin, a2, -sin, cos, b2, zeros, zeros], axis=1)


def make_augmenter(augmentation: Augmentation, *, seed: int) -> Callable[..., tf.Tensor] | None:
    """A vectorized random augmenter for training batches, or None when nothing is enabled.

    Rotation, shift and zoom are combined into ONE affine resampling per image (bilinear,
    ``ImageProjectiveTransformV3``), so the pixels are interpolated once, not three times. Areas
    that come from outside the image are filled with black (constant 0) rather than reflected:
    chest X-rays already have black borders (collimation, film edge), whereas reflection would
    mirror ribs, clavicles and lung apices into the corners, making anatomy that cannot exist.
    Brightness adds ``U(-b, b) * 255``; contrast scales around each image's mean by ``U(1-c, 1+c)``;
    both clip to 0..255. Raw TF ops with stateless seeds make it reproducible, parallel-safe in
    ``tf.data.map`` and fast (no Keras layer state).

    Args:
        augmentation: ranges of the transforms.
        seed: base seed; the same seed gives the same sequence of augmentations.

    Returns:
        ``f(images, seed=None) -> images`` for float batches (B, H, W, C) on 0..255 (one image
        (H, W, C) also works), or None when ``augmentation.enabled`` is False.
    """
    if not isinstance(augmentation, Augmentation):
        raise TypeError(f"augmentation must be an Augmentation, but got {type(augmentation).__name__}")
    return _Augmenter(augmentation, seed) if augmentation.enabled else None


def single_transforms(augmentation: Augmentation) -> dict[str, Augmentation]:
    """One ``Augmentation`` per active transform alone, plus ``"combined"`` (empty dict if none is active)."""
    none = Augmentation.none()
    out = {name: replace(none, **{name: getattr(augmentation, name)})
           for name in _SINGLE if getattr(augmentation, name)}
    if out:
        out["combined"] = augmentation
    return out


