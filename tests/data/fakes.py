"""Writers of small fake medical image files (NIfTI, DICOM, PNG/JPEG) for loader tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine), path)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    spacing: tuple[float, float] | None = None,
    modality: str = "CT",
) -> Path:
    """A minimal, valid DICOM file: (H, W) or (frames, H, W) uint16 pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.set_pixel_data(np.ascontiguousarray(pixels, dtype=np.uint16), photometric, 16)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """PNG/JPEG by suffix; uint16 arrays become 16-bit greyscale PNGs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def blob_volume(shape: tuple[int, int, int], empty_ends: int = 0, seed: int = 0) -> np.ndarray:
    """A float32 volume with a bright ellipsoid-ish blob and noise; the first and last
    ``empty_ends`` slices along axis 2 are all zero (like the ends of a BraTS volume)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    disc = (x**2 + y**2 < 0.6).astype(np.float32)
    volume = np.stack([disc * (100 + 10 * k) for k in range(shape[2])], axis=2)
    volume += rng.uniform(0, 5, shape).astype(np.float32) * disc[..., None]
    if empty_ends:
        volume[..., :empty_ends] = 0
        volume[..., -empty_ends:] = 0
    return volume.astype(np.float32)
