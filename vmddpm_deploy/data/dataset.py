"""Loading a training set (:class:`~vmddpm_deploy.data.image_dataset.ImageDataset`) from a
``--data`` path: a folder, a file, or the bundled set.

Images are held as uint16 ``(n, 1, S, S)`` at the model's resolution (0 <-> -1, 65535 <-> +1,
the encoding ``sample`` writes), so a dataset of tens of thousands of 2-D slices fits in memory
and every training step is a gather, not a file read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vmddpm_deploy.data.bundled import load_bundled
from vmddpm_deploy.data.image_dataset import ImageDataset
from vmddpm_deploy.data.layouts import find_files
from vmddpm_deploy.data.preprocess import Intensity, prepare_planes
from vmddpm_deploy.data.readers import ANATOMICAL_AXES, UnreadableFileError, read_planes
from vmddpm_deploy.errors import DataError, InvalidArgumentError


@dataclass(frozen=True)
class LoadOptions:
    """How files become images; every field is a ``train`` option of the same name."""

    layout: str = "auto"
    modality: str = "t1"  # BraTS contrast
    split: str = "train"  # ChestXRay split
    slice_axis: str | None = None  # None: the layout's (ACDC: voxel axis 2; others: axial)
    intensity: Intensity = field(default_factory=Intensity)
    fit: str = "pad"
    min_foreground: float = 0.05
    skip_bad_files: bool = False

    def __post_init__(self) -> None:
        if self.slice_axis is not None and self.slice_axis not in (*ANATOMICAL_AXES, "0", "1", "2"):
            raise InvalidArgumentError(
                f"unknown slice axis {self.slice_axis!r}; choose axial, coronal, sagittal or a voxel axis 0, 1, 2"
            )
        if not 0.0 <= self.min_foreground <= 1.0:
            raise InvalidArgumentError(f"--min-foreground must be in [0, 1], got {self.min_foreground}")


def load_dataset(
    data: str | Path,
    image_size: int,
    options: LoadOptions | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> ImageDataset:
    """Load ``data`` (a folder, a file, or ``bundled[:train|heldout|all]``) at ``image_size``.

    ``on_file(done, total)`` reports progress after each file. Unreadable files stop the load
    with a DataError naming the file, or are skipped and counted when ``skip_bad_files``.
    """
    options = options or LoadOptions()
    text = str(data)
    if text == "bundled" or text.startswith("bundled:"):
        return load_bundled(text.partition(":")[2] or "train", image_size)

    found = find_files(Path(data), options.layout, modality=options.modality, split=options.split)
    slice_axis = options.slice_axis or found.slice_axis
    images, names, skipped, empty, sizes = [], [], [], 0, Counter()
    for done, item in enumerate(found.files, start=1):
        try:
            raw = read_planes(item.path, item.kind, slice_axis=slice_axis, draft_size=2 * image_size)
        except UnreadableFileError as exc:
            if not options.skip_bad_files:
                raise DataError(
                    f"cannot read {item.path}: {exc}; fix or remove it, or pass --skip-bad-files"
                ) from None
            skipped.append((str(item.path), str(exc)))
        else:
            sizes[tuple(raw.pixels.shape[-2:])] += len(raw.pixels)
            prepared = prepare_planes(raw, options.intensity, image_size, options.fit, options.min_foreground)
            empty += prepared.empty
            images.append(prepared.images)
            relative = item.path.relative_to(found.root).as_posix()
            names.extend(f"{relative}#{label}" if label else relative for label in prepared.labels)
        if on_file is not None:
            on_file(done, len(found.files))
    if not names:
        if skipped:
            raise DataError(f"none of the {len(skipped)} files under {data} could be read (first: {skipped[0][1]})")
        raise DataError(
            f"all {empty} slices under {data} were empty (less than {options.min_foreground:.0%} foreground); "
            f"lower --min-foreground or check --window"
        )
    stacked = np.concatenate(images)[:, None]
    source_sizes = tuple(size for size, _ in sizes.most_common())
    return ImageDataset(stacked, tuple(names), str(data), found.layout, tuple(skipped), empty, source_sizes)
