"""From raw planes to training images: intensity normalisation, empty-slice test, square resize.

Pipeline for one file (:func:`prepare_planes`)::

    raw (n, H, W) file units --window / percentiles--> [0, 1] --MONOCHROME1--> 1 - x
      --empty-slice filter (volumes)--> resize with physical aspect --pad | crop--> (n, S, S)
      --> uint16, 0 <-> -1 and 65535 <-> +1 (the sampler's output encoding, outputs.to_uint16)

Percentiles are taken over the whole file, so the slices of a volume keep their relative
brightness. Pixel spacing keeps the physical aspect ratio when rows and columns differ in size
(an anisotropic MRI plane, a DICOM with rectangular pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vmddpm_deploy.data.readers import RawPlanes
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.outputs import to_uint16

FIT_MODES = ("pad", "crop")

#: A pixel is foreground when it is brighter than this fraction of the intensity window.
FOREGROUND_LEVEL = 0.05


@dataclass(frozen=True)
class Intensity:
    """Raw values -> [0, 1]: a fixed ``window (low, high)`` in file units (CT Hounsfield units,
    8-bit counts ...), else the ``percentiles (low, high)`` of each file's values."""

    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.window is not None and not self.window[0] < self.window[1]:
            raise InvalidArgumentError(f"--window needs LOW < HIGH, got {self.window[0]:g},{self.window[1]:g}")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise InvalidArgumentError(f"--percentiles needs 0 <= LOW < HIGH <= 100, got {low:g},{high:g}")

    def bounds(self, pixels: np.ndarray) -> tuple[float, float]:
        if self.window is not None:
            return self.window
        finite = pixels[np.isfinite(pixels)]
        if finite.size == 0:
            return 0.0, 0.0
        low, high = np.percentile(finite, self.percentiles)
        return float(low), float(high)


def normalise(planes: RawPlanes, intensity: Intensity) -> np.ndarray:
    """(n, H, W) in [0, 1]; a constant file (high == low) maps to 0, i.e. all background."""
    low, high = intensity.bounds(planes.pixels)
    if high <= low:
        return np.zeros(planes.pixels.shape, dtype=np.float32)
    x = np.nan_to_num(planes.pixels, nan=low, posinf=high, neginf=low)
    x = np.clip((x - low) / (high - low), 0.0, 1.0).astype(np.float32)
    return 1.0 - x if planes.invert else x


def foreground_fraction(x01: np.ndarray) -> np.ndarray:
    """Per plane of (n, H, W) in [0, 1]: the fraction of pixels above FOREGROUND_LEVEL."""
    return (x01 > FOREGROUND_LEVEL).mean(axis=(1, 2))


def resize_square(x01: np.ndarray, spacing: tuple[float, float], size: int, fit: str) -> np.ndarray:
    """(n, H, W) -> (n, size, size), keeping the physical aspect ratio.

    ``pad`` scales the longer physical side to ``size`` and pads the other with background (0);
    ``crop`` scales the shorter side to ``size`` and cuts the centre out of the longer one.
    Downscaling is antialiased (a triangle filter as wide as the scale factor).
    """
    if fit not in FIT_MODES:
        raise InvalidArgumentError(f"unknown fit {fit!r}; choose one of {', '.join(FIT_MODES)}")
    _, height, width = x01.shape
    height_mm, width_mm = height * spacing[0], width * spacing[1]
    side_mm = max(height_mm, width_mm) if fit == "pad" else min(height_mm, width_mm)
    out_h = max(1, round(size * height_mm / side_mm))
    out_w = max(1, round(size * width_mm / side_mm))
    x = torch.from_numpy(np.ascontiguousarray(x01, dtype=np.float32))[:, None]
    if (out_h, out_w) != (height, width):
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    if fit == "pad":
        top, left = (size - out_h) // 2, (size - out_w) // 2
        x = F.pad(x, (left, size - out_w - left, top, size - out_h - top))
    else:
        top, left = (out_h - size) // 2, (out_w - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    return x[:, 0].clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class PreparedPlanes:
    """images: (n, size, size) uint16; labels per kept plane; ``empty`` planes dropped."""

    images: np.ndarray
    labels: tuple[str, ...]
    empty: int


def prepare_planes(
    planes: RawPlanes, intensity: Intensity, size: int, fit: str = "pad", min_foreground: float = 0.05
) -> PreparedPlanes:
    """Normalise, drop empty slices of a volume (foreground fraction < ``min_foreground``), resize."""
    x01 = normalise(planes, intensity)
    labels = planes.labels
    empty = 0
    if planes.is_volume:
        keep = foreground_fraction(x01) >= min_foreground
        empty = int((~keep).sum())
        x01 = x01[keep]
        labels = tuple(label for label, kept in zip(labels, keep) if kept)
    if not len(x01):
        return PreparedPlanes(np.zeros((0, size, size), np.uint16), (), empty)
    resized = resize_square(x01, planes.spacing, size, fit)
    return PreparedPlanes(to_uint16(resized * 2.0 - 1.0), labels, empty)


def uint16_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint16 images (0 <-> -1, 65535 <-> +1) -> float32 tensor in [-1, 1]; inverse of outputs.to_uint16."""
    return torch.from_numpy(images.astype(np.float32)) * (2.0 / 65535.0) - 1.0
