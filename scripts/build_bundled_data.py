"""Build vmddpm_deploy/data/bundled/: axial brain MRI slices from the MNI ICBM152 2009a templates.

The templates ship inside nilearn's wheel (nilearn/datasets/data/*.nii.gz), so the build needs no
network beyond the package registry and nilearn need not be installed:

    pip download --no-deps nilearn==0.14.1 -d /tmp/wheels
    .venv/bin/python scripts/build_bundled_data.py --wheel /tmp/wheels/nilearn-0.14.1-py3-none-any.whl

Each template (T1-weighted, grey-matter and white-matter probability) goes through the same
reader and preprocessing as ``vmddpm-deploy train --data`` (vmddpm_deploy.data): reoriented to
RAS+, axial planes shown anterior-up, 0.5-99.5 percentile window per volume, cropped to the
brain's bounding box (the union over all slices, plus a margin) so the brain fills the frame,
padded to a square and resized with an antialiasing filter to 32x32 and 64x64. Slice positions
are kept where the T1 brain covers at least MIN_BRAIN of the square; every fifth position is
held out, in all three contrasts. Outputs: brain_mri_mni152.npz, manifest.json (sha256 and
counts), README.md (provenance and licence).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.data.bundled import BUNDLED_DIR, BUNDLED_FILE, BUNDLED_MANIFEST, BUNDLED_SIZES
from vmddpm_deploy.data.preprocess import Intensity, foreground_fraction, normalise, prepare_planes
from vmddpm_deploy.data.readers import RawPlanes, read_planes
from vmddpm_deploy.digests import sha256_file

TEMPLATES = {  # contrast name -> member of the nilearn wheel
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MIN_BRAIN = 0.08  # fraction of the square frame the T1 brain must cover for a slice to be kept
MARGIN = 4  # voxels (1 mm) of background kept around the brain's bounding box
HELDOUT_EVERY = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="nilearn-0.14.1-py3-none-any.whl")
    args = parser.parse_args(argv)

    wheel_sha256 = sha256_file(args.wheel)
    members, volumes = {}, {}
    with zipfile.ZipFile(args.wheel) as wheel, tempfile.TemporaryDirectory() as tmp:
        for contrast, member in TEMPLATES.items():
            data = wheel.read(member)
            members[contrast] = {"member": member, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            path = Path(tmp) / Path(member).name
            path.write_bytes(data)
            volumes[contrast] = read_planes(path, "nifti", slice_axis="axial")
        nilearn_version = _wheel_version(wheel)

    intensity = Intensity()  # 0.5-99.5 percentiles of each whole volume
    t1 = normalise(volumes["t1"], intensity)
    brain = t1 > 0.05
    rows = np.flatnonzero(brain.any(axis=(0, 2)))
    cols = np.flatnonzero(brain.any(axis=(0, 1)))
    top, bottom = max(rows[0] - MARGIN, 0), min(rows[-1] + 1 + MARGIN, t1.shape[1])
    left, right = max(cols[0] - MARGIN, 0), min(cols[-1] + 1 + MARGIN, t1.shape[2])
    side = max(bottom - top, right - left)
    coverage = foreground_fraction(t1[:, top:bottom, left:right]) * (bottom - top) * (right - left) / side**2
    positions = np.flatnonzero(coverage >= MIN_BRAIN)

    images = {size: [] for size in BUNDLED_SIZES}
    contrast_index, slice_index = [], []
    for index, (contrast, volume) in enumerate(volumes.items()):
        cropped = RawPlanes(
            np.ascontiguousarray(volume.pixels[:, top:bottom, left:right]), volume.spacing, volume.labels
        )
        for size in BUNDLED_SIZES:
            # is_volume=False: positions were chosen on the T1, so every contrast keeps the same ones.
            prepared = prepare_planes(cropped, intensity, size, fit="pad")
            images[size].append(prepared.images[positions])
        contrast_index.extend([index] * len(positions))
        slice_index.extend(positions.tolist())
    slice_index = np.array(slice_index, np.int16)
    heldout = slice_index % HELDOUT_EVERY == HELDOUT_EVERY // 2
    arrays = {f"images_{size}": np.concatenate(images[size])[:, None] for size in BUNDLED_SIZES}
    arrays |= {
        "contrast": np.array(contrast_index, np.uint8),
        "contrast_names": np.array(list(volumes)),
        "slice_index": slice_index,
        "heldout": heldout,
    }

    BUNDLED_DIR.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(BUNDLED_FILE, lambda handle: handle.write(buffer.getvalue()))
    manifest = {
        "file": BUNDLED_FILE.name,
        "sha256": sha256_file(BUNDLED_FILE),
        "bytes": BUNDLED_FILE.stat().st_size,
        "images": len(slice_index),
        "train": int((~heldout).sum()),
        "heldout": int(heldout.sum()),
        "sizes": list(BUNDLED_SIZES),
        "contrasts": list(volumes),
        "slice_positions": [int(positions[0]), int(positions[-1]), len(positions)],
        "crop_rows_cols": [int(top), int(bottom), int(left), int(right)],
        "source": {"wheel": args.wheel.name, "wheel_sha256": wheel_sha256, "nilearn": nilearn_version,
                   "members": members},
        "built_by": "scripts/build_bundled_data.py",
    }
    write_atomic(BUNDLED_MANIFEST, lambda handle: handle.write((json.dumps(manifest, indent=2) + "\n").encode()))
    readme = README.format(**manifest, **{f"{c}_sha256": members[c]["sha256"] for c in members},
                           first=positions[0], last=positions[-1], positions=len(positions),
                           wheel_name=args.wheel.name, min_brain=MIN_BRAIN, every=HELDOUT_EVERY)
    write_atomic(BUNDLED_DIR / "README.md", lambda handle: handle.write(readme.encode()))
    print(f"wrote {BUNDLED_FILE} ({manifest['bytes'] / 1e6:.2f} MB): {manifest['images']} slices, "
          f"{manifest['train']} train / {manifest['heldout']} held out, positions {positions[0]}..{positions[-1]}")
    return 0


def _wheel_version(wheel: zipfile.ZipFile) -> str:
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    for line in wheel.read(metadata).decode().splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


README = """\
# Bundled data: axial brain MRI slices (MNI ICBM152 2009a templates)

`brain_mri_mni152.npz` is what `vmddpm-deploy train --data bundled` trains on, offline. It holds
{images} axial slices ({train} train, {heldout} held out) at 32x32 and 64x64, 16-bit:

| array | shape | meaning |
|---|---|---|
| `images_32`, `images_64` | (n, 1, S, S) uint16 | 0 is -1 (background), 65535 is +1 |
| `contrast` | (n,) uint8 | index into `contrast_names`: t1, gm, wm |
| `slice_index` | (n,) int16 | axial plane of the 197 x 233 x 189 template (1 mm voxels, RAS+) |
| `heldout` | (n,) bool | every {every}th slice position (all three contrasts of it) |

Load it with `vmddpm_deploy.data.load_bundled(split, image_size)` or `--data bundled`,
`--data bundled:heldout`, `--data bundled:all`. `manifest.json` records its sha256, which every
load checks.

## Source

Three volumes of the MNI ICBM152 non-linear 2009a atlas (Fonov et al. 2009, 2011; files named
`*_tal_nlin_sym_09a_converted`), in the skull-stripped, 8-bit form that nilearn {source[nilearn]} ships in its wheel
(`{wheel_name}`, sha256 `{source[wheel_sha256]}`):

| contrast | wheel member | sha256 |
|---|---|---|
| t1: T1-weighted average of 152 adults | `{source[members][t1][member]}` | `{t1_sha256}` |
| gm: grey-matter probability map | `{source[members][gm][member]}` | `{gm_sha256}` |
| wm: white-matter probability map | `{source[members][wm][member]}` | `{wm_sha256}` |

## How it was built

`python scripts/build_bundled_data.py --wheel {wheel_name}` (reads the wheel as a zip; nilearn
need not be installed). Every volume goes through the loaders of `vmddpm_deploy.data`: RAS+
reorientation, axial planes anterior-up, a 0.5-99.5 percentile intensity window per volume,
a crop to the brain's bounding box (rows {crop_rows_cols[0]}..{crop_rows_cols[1]}, columns
{crop_rows_cols[2]}..{crop_rows_cols[3]} of the anterior-up plane, with a 4-voxel margin),
padding to a square and antialiased resizing. Slice positions {first}..{last} ({positions} of 189)
are those where the T1 brain covers at least {min_brain:.0%} of the frame; all three contrasts use
the same positions.

What it is and is not: these are averages of 152 brains, not individual scans, and the three
contrasts come from one template space. The held-out slices are other positions of the same
volumes: they measure how well samples match this distribution, not generalisation to new
subjects. Horizontal flips (the `train` default) add little because the template is symmetric.

## Licence

The MNI ICBM152 templates are distributed with this notice (nilearn's own description lists the
licence as unknown; this is the notice the McConnell Brain Imaging Centre publishes with them):

> Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
> Institute, McGill University. Permission to use, copy, modify, and distribute this software and
> its documentation for any purpose and without fee is hereby granted, provided that the above
> copyright notice appear in all copies. The authors and McGill University make no
> representations about the suitability of this software for any purpose. It is provided "as is"
> without express or implied warranty. The authors are not responsible for any data loss,
> equipment damage, property loss, or injury to subjects or patients resulting from the use or
> misuse of this software package.

nilearn itself is BSD-3-Clause licensed.

## References

- V. S. Fonov, A. C. Evans, R. C. McKinstry, C. R. Almli, D. L. Collins. Unbiased nonlinear
  average age-appropriate brain templates from birth to adulthood. NeuroImage 47, S102 (2009).
- V. Fonov, A. C. Evans, K. Botteron, C. R. Almli, R. C. McKinstry, D. L. Collins. Unbiased
  average age-appropriate atlases for pediatric studies. NeuroImage 54(1), 313-327 (2011).
- D. L. Collins, A. P. Zijdenbos, W. F. C. Baaré, A. C. Evans. ANIMAL+INSECT: improved cortical
  structure segmentation. IPMI 1999, LNCS 1613, 210-223.
"""


if __name__ == "__main__":
    sys.exit(main())
