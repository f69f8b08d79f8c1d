"""The bundled dataset: axial brain MRI slices of the MNI ICBM152 2009a templates, offline.

``bundled/brain_mri_mni152.npz`` (built by ``scripts/build_bundled_data.py``; provenance and
licence in ``bundled/README.md``) holds, for ``n`` slices:

* ``images_32 (n, 1, 32, 32)``, ``images_64 (n, 1, 64, 64)`` uint16, 0 <-> -1 and 65535 <-> +1;
* ``contrast (n,)`` uint8, an index into ``contrast_names`` (``t1``, ``gm``, ``wm``);
* ``slice_index (n,)`` int16, the axial plane of the 197 x 233 x 189 template (1 mm voxels);
* ``heldout (n,)`` bool: every fifth slice position, in all three contrasts.

``bundled/manifest.json`` records the file's sha256, checked on every load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vmddpm_deploy.data.image_dataset import ImageDataset
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import DataError

BUNDLED_DIR = Path(__file__).with_name("bundled")
BUNDLED_FILE = BUNDLED_DIR / "brain_mri_mni152.npz"
BUNDLED_MANIFEST = BUNDLED_DIR / "manifest.json"
BUNDLED_SPLITS = ("train", "heldout", "all")
BUNDLED_SIZES = (32, 64)


def load_bundled(split: str = "train", image_size: int = 32) -> ImageDataset:
    """The bundled slices of ``split`` (``train``, ``heldout`` or ``all``) at 32 or 64 pixels."""
    if split not in BUNDLED_SPLITS:
        raise DataError(f"unknown bundled split {split!r}; use bundled, bundled:heldout or bundled:all")
    if image_size not in BUNDLED_SIZES:
        raise DataError(
            f"the bundled data has {' and '.join(f'{s}x{s}' for s in BUNDLED_SIZES)} images; the model needs "
            f"{image_size}x{image_size}: use --preset tiny or small, or point --data at your own images"
        )
    arrays = _read_verified()
    images = arrays[f"images_{image_size}"]
    keep = np.ones(len(images), bool) if split == "all" else arrays["heldout"] == (split == "heldout")
    contrasts = [str(name) for name in arrays["contrast_names"]]
    names = tuple(
        f"mni152_{contrasts[c]}#axial={z}" for c, z in zip(arrays["contrast"][keep], arrays["slice_index"][keep])
    )
    return ImageDataset(np.ascontiguousarray(images[keep]), names, f"bundled:{split}", "bundled")


def _read_verified() -> dict[str, np.ndarray]:
    try:
        manifest = json.loads(BUNDLED_MANIFEST.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"bundled data manifest {BUNDLED_MANIFEST} is unreadable ({exc}); reinstall vmddpm-deploy"
        ) from None
    if not BUNDLED_FILE.is_file():
        raise DataError(f"bundled data {BUNDLED_FILE} is missing; reinstall vmddpm-deploy")
    if sha256_file(BUNDLED_FILE) != manifest.get("sha256"):
        raise DataError(
            f"bundled data {BUNDLED_FILE} does not match its manifest's sha256; reinstall vmddpm-deploy "
            f"or rebuild it with scripts/build_bundled_data.py"
        )
    with np.load(BUNDLED_FILE, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}
