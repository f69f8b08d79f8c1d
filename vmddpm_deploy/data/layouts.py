"""Which files of a ``--data`` folder are training images: public dataset layouts and plain folders.

Layouts (``--layout``, detected when ``auto``, in this order):

``acdc``       ACDC cardiac cine MRI (Bernard et al. 2018), NIfTI:
               ``[training|testing/]patientNNN/patientNNN_frameNN.nii.gz`` (the ED and ES frames;
               the ``_gt`` segmentations and ``_4d`` sequences are left out). Sliced along the
               acquisition axis (voxel axis 2): the short-axis stack.
``brats``      BraTS 2018 brain tumour MRI, NIfTI:
               ``[HGG|LGG/]<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``; ``--modality`` picks
               one contrast (the ``seg`` label maps are never images). Axial slices.
``chestxray``  Kermany et al. 2018 paediatric chest X-rays (Kaggle "chest-xray-pneumonia"), JPEG:
               ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg``; ``--split`` picks one
               split (both classes). Where the archive holds a nested copy
               (``chest_xray/chest_xray/...``), the shallowest one is used.
``folder``     every PNG/JPEG/TIFF/BMP, DICOM (``.dcm``, or no extension with a DICOM preamble)
               and NIfTI file below the path, or the one file the path names. Axial slices.

Hidden files and folders and macOS ``__MACOSX`` folders are ignored everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vmddpm_deploy.data.readers import file_kind
from vmddpm_deploy.errors import DataError, InvalidArgumentError

LAYOUTS = ("auto", "folder", "acdc", "brats", "chestxray")
BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
CHESTXRAY_SPLITS = ("train", "val", "test", "all")
CHESTXRAY_CLASSES = ("NORMAL", "PNEUMONIA")

_ACDC_FRAME = re.compile(r"patient\d{3}_frame\d{2}\.nii(\.gz)?")
_BRATS_FILE = re.compile(r".+_(t1|t1ce|t2|flair|seg)\.nii(\.gz)?")


@dataclass(frozen=True)
class DataFile:
    path: Path
    kind: str  # "image", "dicom" or "nifti" (readers.file_kind)


@dataclass(frozen=True)
class LayoutFiles:
    """The files of one dataset, in a fixed (sorted) order, and how to slice its volumes."""

    layout: str
    root: Path
    files: tuple[DataFile, ...]
    slice_axis: str


def find_files(path: Path, layout: str = "auto", *, modality: str = "t1", split: str = "train") -> LayoutFiles:
    """The image files under ``path`` for ``layout`` (``auto`` detects it); DataError if none."""
    if layout not in LAYOUTS:
        raise InvalidArgumentError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if modality not in BRATS_MODALITIES:
        raise InvalidArgumentError(f"unknown BraTS modality {modality!r}; choose one of {', '.join(BRATS_MODALITIES)}")
    if split not in CHESTXRAY_SPLITS:
        raise InvalidArgumentError(f"unknown split {split!r}; choose one of {', '.join(CHESTXRAY_SPLITS)}")
    if not path.exists():
        raise DataError(f"data path {path} does not exist; give a folder or file of images, or 'bundled'")
    if path.is_file():
        if layout not in ("auto", "folder"):
            raise DataError(f"{path} is a file; the {layout} layout needs the dataset's folder")
        kind = file_kind(path)
        if kind is None:
            raise DataError(f"{path} is not an image, DICOM or NIfTI file (by its name)")
        return LayoutFiles("folder", path.parent, (DataFile(path, kind),), "axial")

    names = _walk(path)
    if layout in ("auto", "acdc"):
        acdc = [p for p in names if _ACDC_FRAME.fullmatch(p.name)]
        if acdc:
            return LayoutFiles("acdc", path, tuple(DataFile(p, "nifti") for p in acdc), "2")
        if layout == "acdc":
            raise DataError(f"{path} does not look like ACDC: no patientNNN/patientNNN_frameNN.nii.gz files below it")
    if layout in ("auto", "brats"):
        brats = [p for p in names if _BRATS_FILE.fullmatch(p.name)]
        if brats:
            chosen = [p for p in brats if _BRATS_FILE.fullmatch(p.name)[1] == modality]
            if not chosen:
                found = sorted({_BRATS_FILE.fullmatch(p.name)[1] for p in brats} - {"seg"})
                raise DataError(
                    f"BraTS data at {path} has no {modality} files; it has {', '.join(found) or 'only seg'}"
                    f" (pick one with --modality)"
                )
            return LayoutFiles("brats", path, tuple(DataFile(p, "nifti") for p in chosen), "axial")
        if layout == "brats":
            raise DataError(f"{path} does not look like BraTS: no <case>/<case>_{modality}.nii.gz files below it")
    if layout in ("auto", "chestxray"):
        chest = _chestxray_files(names, split)
        if chest is not None:
            root, files = chest
            if not files:
                raise DataError(f"ChestXRay data at {root} has no images in its {split} split")
            return LayoutFiles("chestxray", root, tuple(DataFile(p, "image") for p in files), "axial")
        if layout == "chestxray":
            raise DataError(
                f"{path} does not look like the Kermany ChestXRay set: no {{train,test,val}}/{{NORMAL,PNEUMONIA}}/ "
                f"image folders below it"
            )
    files = []
    for p in names:
        kind = file_kind(p)
        if kind is not None:
            files.append(DataFile(p, kind))
    if not files:
        raise DataError(f"no image, DICOM or NIfTI files found below {path}")
    return LayoutFiles("folder", path, tuple(files), "axial")


def _walk(root: Path) -> list[Path]:
    """Every regular file below ``root``, sorted, skipping hidden entries and __MACOSX."""
    found = []
    for directory, subdirs, filenames in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__MACOSX")
        found.extend(Path(directory) / name for name in sorted(filenames) if not name.startswith("."))
    return found


def _chestxray_files(names: list[Path], split: str) -> tuple[Path, list[Path]] | None:
    """(dataset root, its images in ``split``) for the shallowest ChestXRay root, or None."""
    by_root: dict[Path, list[Path]] = {}
    for p in names:
        cls, part = p.parent.name, p.parent.parent.name
        if cls in CHESTXRAY_CLASSES and part in CHESTXRAY_SPLITS[:3] and file_kind(p) == "image":
            by_root.setdefault(p.parent.parent.parent, []).append(p)
    if not by_root:
        return None
    root = min(by_root, key=lambda r: (len(r.parts), str(r)))
    files = [p for p in by_root[root] if split == "all" or p.parent.parent.name == split]
    return root, files
