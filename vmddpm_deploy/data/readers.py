"""Reading one file into planes of raw pixel values: PNG/JPEG/TIFF/BMP, DICOM and NIfTI.

Every reader returns a :class:`RawPlanes`: ``pixels (n, H, W)`` float32 in the file's own units
(8/16-bit counts, Hounsfield units after DICOM's modality LUT, NIfTI intensities after its
scaling), the in-plane pixel spacing, and whether the planes are slices of one acquisition (a
NIfTI volume, a multi-frame DICOM), which are normalised together and filtered for empty ones.
A file that cannot be read raises :class:`UnreadableFileError` with a short reason; the dataset
loader decides whether that skips the file or stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: File kinds by suffix (lower case; ``.nii.gz`` is matched on the full name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: Planes of a volume named by anatomical axis, after nibabel's reorientation to RAS+.
ANATOMICAL_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


class UnreadableFileError(Exception):
    """A file that is not a readable image of a supported kind; ``str()`` is the reason."""


@dataclass(frozen=True)
class RawPlanes:
    """pixels: (n, H, W) float32 in the file's units; spacing: (row, column) pixel size."""

    pixels: np.ndarray
    spacing: tuple[float, float] = (1.0, 1.0)
    labels: tuple[str, ...] = ("",)  # per plane, e.g. "z=12" or "frame=3"; "" for a plain image
    is_volume: bool = False
    invert: bool = False  # DICOM MONOCHROME1: low values are bright


def file_kind(path: Path) -> str | None:
    """``image``, ``dicom`` or ``nifti`` by suffix; extensionless files with a DICOM preamble
    count as DICOM (scanners often write them so); ``None`` for anything else."""
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if "." not in name and _has_dicom_preamble(path):
        return "dicom"
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_planes(path: Path, kind: str, *, slice_axis: str = "axial", draft_size: int | None = None) -> RawPlanes:
    """Read ``path`` as ``kind`` (see :func:`file_kind`).

    ``slice_axis`` picks the planes of a NIfTI volume: ``axial``/``coronal``/``sagittal`` after
    reorientation to RAS+, or a voxel axis ``0``/``1``/``2`` as stored. ``draft_size`` lets the
    JPEG decoder scale down by a power of two while staying at least that many pixels per side.
    """
    try:
        if kind == "image":
            return _read_image(path, draft_size)
        if kind == "dicom":
            return _read_dicom(path)
        if kind == "nifti":
            return _read_nifti(path, slice_axis)
    except UnreadableFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  decoders raise anything from OSError to struct.error on bad bytes
        raise UnreadableFileError(_first_line(exc)) from None
    raise ValueError(f"unknown file kind {kind!r}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _read_image(path: Path, draft_size: int | None) -> RawPlanes:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise UnreadableFileError("not an image Pillow can identify") from None
    with image:
        if draft_size is not None and image.format == "JPEG":
            image.draft("L", (draft_size, draft_size))  # decode at 1/2, 1/4 or 1/8 scale: much faster
        image.load()
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            pixels = np.asarray(image, dtype=np.float32)  # 16-bit / 32-bit grey keep their full range
        else:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)  # ITU-R 601-2 luma for colour
    return RawPlanes(pixels[None])


def _read_dicom(path: Path) -> RawPlanes:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        raise UnreadableFileError("not a DICOM file (no DICM preamble or file meta)") from None
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise UnreadableFileError(f"DICOM {dataset.get('Modality', 'object')} without pixel data")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001  (pydicom raises per-decoder types)
        raise UnreadableFileError(f"cannot decode DICOM pixel data ({_first_line(exc)})") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, dataset)  # stored values -> HU etc. (rescale slope/intercept)
    else:  # pixel_array already converted YBR to RGB
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = np.asarray(pixels, dtype=np.float32)
    if frames == 1:
        pixels = pixels[None]
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing") or (1.0, 1.0)
    labels = tuple(f"frame={k}" for k in range(frames)) if frames > 1 else ("",)
    return RawPlanes(
        pixels,
        (float(spacing[0]), float(spacing[1])),
        labels,
        is_volume=frames > 1,
        invert=photometric == "MONOCHROME1",
    )


def _read_nifti(path: Path, slice_axis: str) -> RawPlanes:
    import nibabel as nib

    try:
        volume = nib.load(path)
    except nib.filebasedimages.ImageFileError:
        raise UnreadableFileError("not a NIfTI file nibabel can read") from None
    if slice_axis in ANATOMICAL_AXES:
        volume = nib.as_closest_canonical(volume)  # flips/permutes voxel axes only, no resampling
        axis = ANATOMICAL_AXES[slice_axis]
    else:
        axis = int(slice_axis)
    data = np.asarray(volume.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise UnreadableFileError(f"{data.ndim}-D image of shape {data.shape}; give 3-D volumes (one time frame)")
    zooms = [float(z) for z in volume.header.get_zooms()[:3]]
    planes = np.moveaxis(data, axis, 0)  # (n, a, b): a, b the remaining axes in order
    in_plane = [zooms[i] for i in range(3) if i != axis]
    if slice_axis in ANATOMICAL_AXES:
        # RAS+ plane (a, b) -> rows running from +b to -b (anterior / superior at the top), the
        # way radiology viewers show it.
        planes = np.rot90(planes, k=1, axes=(1, 2))
        in_plane = in_plane[::-1]
    name = slice_axis if slice_axis in ANATOMICAL_AXES else f"axis{axis}"
    labels = tuple(f"{name}={k}" for k in range(planes.shape[0]))
    return RawPlanes(np.ascontiguousarray(planes), (in_plane[0], in_plane[1]), labels, is_volume=True)
