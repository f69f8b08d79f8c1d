"""The images a training run sees: 2-D slices in memory, whichever reader or bundled file made them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vmddpm_deploy.data.preprocess import uint16_to_unit


@dataclass(frozen=True)
class ImageDataset:
    """images: (n, 1, S, S) uint16; names[i] says where image i came from (file and plane)."""

    images: np.ndarray
    names: tuple[str, ...]
    source: str
    layout: str
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of unreadable files left out
    empty_slices: int = 0
    #: (height, width) of the planes as read, before the resize to S x S, most common first
    source_sizes: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def fingerprint(self) -> str:
        """sha256 of the pixels and their shape: a resumed run checks it trains on the same data."""
        digest = hashlib.sha256(repr(self.images.shape).encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        return digest.hexdigest()

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """The images at ``indices`` as float32 in [-1, 1], (len(indices), 1, S, S)."""
        return uint16_to_unit(self.images[indices])

    def summary(self) -> str:
        text = f"{len(self)} images of {self.image_size}x{self.image_size} from {self.source} ({self.layout})"
        if self.empty_slices:
            text += f", {self.empty_slices} empty slices left out"
        if self.skipped:
            path, reason = self.skipped[0]
            text += f", {len(self.skipped)} unreadable files skipped (first: {path}: {reason})"
        return text
