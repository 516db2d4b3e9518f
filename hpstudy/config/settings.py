"""Plain settings shared by the study configuration and the data pipeline (augmentation, normalization, leak check).

Kept free of TensorFlow imports so that validating a YAML file stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hpstudy.errors import ConfigError

__all__ = ["Augmentation", "NORMALIZATIONS", "LEAK_SEVERITIES"]

NORMALIZATIONS = ("fixed", "dataset", "per_image")
LEAK_SEVERITIES = ("warn", "error", "off")


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms applied to training batches only.

    Attributes:
        rotation: maximum rotation in degrees (either direction).
        shift: maximum translation as a fraction of height/width.
        zoom: maximum zoom in or out as a fraction (0.1 means 90 %..110 %).
        brightness: maximum brightness change as a fraction of the 0..255 range.
        contrast: maximum contrast factor change (0.1 means ×0.9..×1.1).
        horizontal_flip: mirror left/right (off by default: the heart is on one side in a chest X-ray).
    """

    rotation: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.0
    contrast: float = 0.0
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        limits = {"rotation": 180.0, "shift": 1.0, "zoom": 1.0, "brightness": 1.0, "contrast": 1.0}
        for name, upper in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= upper:
                raise ConfigError(f"augmentation.{name} must be a number in [0, {upper}], but got {value!r}")
        if not isinstance(self.horizontal_flip, bool):
            raise ConfigError(f"augmentation.horizontal_flip must be true or false, but got {self.horizontal_flip!r}")

    @property
    def enabled(self) -> bool:
        """True when at least one transform is active."""
        return any([self.rotation, self.shift, self.zoom, self.brightness, self.contrast, self.horizontal_flip])

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation at all."""
        return cls(rotation=0.0, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0, horizontal_flip=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, where: str = "augmentation") -> Augmentation:
        """Build from a YAML mapping; ``False``/``None`` means no augmentation. Unknown keys are errors."""
        if data is None or data is False:
            return cls.none()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping of transform ranges or false, but got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML/JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
