"""Writing generated images: 16-bit PNG, NPZ and NIfTI.

Images arrive as float arrays in [-1, 1] and are stored as uint16 (0..65535), the bit depth of
medical modalities. Every file is written under a temporary name and renamed into place, so a
crash never leaves a truncated file under a final name.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.errors import OutputError

#: PNG colour types by channel count: grey, grey+alpha, RGB, RGBA.
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def to_uint16(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint16, clipping out-of-range values."""
    scaled = (np.clip(images, -1.0, 1.0) + 1.0) * (65535.0 / 2.0)
    return np.rint(scaled).astype(np.uint16)


def encode_png16(image: np.ndarray) -> bytes:
    """Encode a (C, H, W) uint16 image (C in 1..4) as a 16-bit PNG.

    Written by hand because Pillow cannot write 16-bit images with more than one channel.
    """
    channels, height, width = image.shape
    if channels not in _PNG_COLOUR_TYPE:
        raise OutputError(f"PNG holds 1 to 4 channels, the model makes {channels}; use --format npz")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # Rows are big-endian samples, interleaved per pixel, each row led by filter type 0.
    rows = np.ascontiguousarray(image.transpose(1, 2, 0), dtype=">u2").reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows.view(np.uint8)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def prepare_output_dir(path: Path) -> None:
    """Create ``path`` (and parents) or explain why it cannot be used."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a directory; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"output directory {path} is not writable")


def sample_file_name(index: int, total: int, suffix: str) -> str:
    """Zero-padded file name, so a directory listing sorts in sample order."""
    return f"{index:0{max(5, len(str(max(total - 1, 0))))}d}{suffix}"


def png_name(index: int, total: int) -> str:
    return sample_file_name(index, total, ".png")


def write_png16(path: Path, image: np.ndarray) -> None:
    png = encode_png16(image)
    write_atomic(path, lambda handle: handle.write(png))


#: A grid's tiles are scaled up (nearest neighbour, no smoothing) to about this many pixels.
TILE_PIXELS = 128


def image_grid(images: np.ndarray):
    """uint8 images (n, C, H, W), C 1 or 3, as one 8-bit RGB PIL image: a near-square grid of tiles
    scaled up to about :data:`TILE_PIXELS`, with 2-pixel grey gaps between them."""
    from PIL import Image

    count, channels, size = len(images), images.shape[1], images.shape[-1]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = max(1, TILE_PIXELS // size)
    tile, border = size * scale, 2
    canvas = np.full((rows * (tile + border) - border, columns * (tile + border) - border, 3), 128, np.uint8)
    for k, image in enumerate(images):
        rgb = np.repeat(image, 3, axis=0) if channels == 1 else image
        big = rgb.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = (k // columns) * (tile + border), (k % columns) * (tile + border)
        canvas[top : top + tile, left : left + tile] = big
    return Image.fromarray(canvas)


def write_image_grid(path: Path, images: np.ndarray) -> Path:
    """:func:`image_grid` of model-range images (n, C, H, W) in [-1, 1], as an 8-bit PNG, atomically."""
    pixels = ((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)
    grid = image_grid(pixels)
    return write_atomic(Path(path), lambda handle: grid.save(handle, format="PNG"))


def write_npz(path: Path, indices: np.ndarray, images: np.ndarray) -> None:
    """One NPZ with ``indices (n,)`` and ``images (n, C, H, W) uint16``."""
    write_atomic(path, lambda handle: np.savez(handle, indices=indices, images=images))


#: NIfTI stores what PNG stores (uint16 v), scaled back to the model's range by the header:
#: value = v * NIFTI_SLOPE + NIFTI_INTER, so ``nibabel.load(f).get_fdata()`` is in [-1, 1].
NIFTI_SLOPE, NIFTI_INTER = 2.0 / 65535.0, -1.0


def nifti_affine(height: int) -> np.ndarray:
    """Voxel (row i, column j, sample k) -> RAS millimetres (x, y, z) = (j, height - 1 - i, k).

    1 mm pixels, 1 mm between samples, no resampling: the array stays the PNG's pixel array
    (rows first) while viewers, which draw +y (anterior) up, show each slice upright as the PNG.
    """
    return np.array(
        [[0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, height - 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )


def encode_nifti(images: np.ndarray, description: str, metadata: dict[str, Any]) -> bytes:
    """Encode ``images (n, C, H, W) uint16`` as a gzipped NIfTI-1 volume.

    The volume is (H, W, n) for grey images, (H, W, n, C) otherwise; ``description`` (at most 80
    bytes, NIfTI's ``descrip``) is what DICOM converters carry over as the series description,
    ``metadata`` goes into a JSON ``comment`` header extension. Identical inputs give identical
    bytes (the gzip header carries no time stamp).
    """
    import nibabel as nib

    channels, height = images.shape[1], images.shape[2]
    volume = np.ascontiguousarray(images.transpose(2, 3, 0, 1))  # (H, W, n, C)
    if channels == 1:
        volume = volume[..., 0]
    image = nib.Nifti1Image(volume, nifti_affine(height))
    image.set_qform(nifti_affine(height), code="aligned")  # qform and sform agree for every reader
    header = image.header
    header.set_data_dtype(np.uint16)
    header.set_slope_inter(NIFTI_SLOPE, NIFTI_INTER)
    header.set_xyzt_units("mm")
    header["cal_min"], header["cal_max"] = -1.0, 1.0  # display window, in scaled units
    header["descrip"] = description.encode()[:80]
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(metadata).encode()))
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def write_nifti(path: Path, images: np.ndarray, description: str, metadata: dict[str, Any]) -> None:
    """One ``.nii.gz`` holding ``images (n, C, H, W) uint16``; see :func:`encode_nifti`."""
    data = encode_nifti(images, description, metadata)
    write_atomic(path, lambda handle: handle.write(data))
