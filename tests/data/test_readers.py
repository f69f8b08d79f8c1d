"""Readers: each file kind gives the pixel values, spacing and planes the format defines."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.data.fakes import write_dicom, write_image, write_nifti
from vmddpm_deploy.data.readers import UnreadableFileError, file_kind, read_planes


def test_16_bit_png_keeps_every_level(tmp_path):
    pixels = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1361)  # spans 0..63967
    path = write_image(tmp_path / "a.png", pixels)
    planes = read_planes(path, "image")
    assert planes.pixels.shape == (1, 6, 8) and not planes.is_volume
    np.testing.assert_array_equal(planes.pixels[0], pixels.astype(np.float32))


def test_8_bit_rgb_becomes_itu_601_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = write_image(tmp_path / "rgb.png", rgb)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    planes = read_planes(path, "image")
    assert np.abs(planes.pixels[0] - luma).max() <= 1.0  # Pillow rounds in fixed point


def test_jpeg_draft_decodes_smaller_but_not_below_the_request(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (192, 1))
    path = tmp_path / "big.jpeg"
    Image.fromarray(pixels).save(path, quality=95)
    full = read_planes(path, "image").pixels
    draft = read_planes(path, "image", draft_size=64).pixels
    assert full.shape == (1, 192, 256)
    assert draft.shape[1] >= 64 and draft.shape[2] >= 64 and draft.shape[2] < 256


def test_dicom_applies_the_modality_lut_and_reads_spacing(tmp_path):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0, spacing=(0.5, 0.75))
    planes = read_planes(path, "dicom")
    np.testing.assert_array_equal(planes.pixels[0], stored * 2.0 - 1024.0)
    assert planes.spacing == (0.5, 0.75) and not planes.invert and not planes.is_volume


def test_multiframe_monochrome1_dicom_is_an_inverted_volume(tmp_path):
    stored = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    planes = read_planes(write_dicom(tmp_path / "mf.dcm", stored, photometric="MONOCHROME1"), "dicom")
    assert planes.pixels.shape == (2, 3, 4) and planes.is_volume and planes.invert
    assert planes.labels == ("frame=0", "frame=1")
    np.testing.assert_array_equal(planes.pixels, stored.astype(np.float32))


def test_real_dicom_files_shipped_by_pydicom():
    """Real scanner files: pydicom's MR_small and, where pydicom-data is installed, a CR chest film."""
    mr = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
    planes = read_planes(mr, "dicom")
    np.testing.assert_array_equal(planes.pixels[0], pydicom.dcmread(mr).pixel_array.astype(np.float32))
    try:
        chest = pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False)
    except Exception:  # noqa: BLE001  pydicom raises different types for a missing external source
        chest = None
    if chest is None:
        pytest.skip("pydicom-data (RG1_UNCR.dcm, a MONOCHROME1 chest CR) is not installed")
    planes = read_planes(Path(chest), "dicom")
    assert planes.invert and planes.pixels.shape == (1, 1955, 1841)


def test_nifti_axial_planes_of_a_ras_volume_are_anterior_up(tmp_path):
    volume = np.random.default_rng(1).random((5, 6, 4)).astype(np.float32)  # x (R), y (A), z (S)
    planes = read_planes(write_nifti(tmp_path / "v.nii.gz", volume), "nifti", slice_axis="axial")
    assert planes.pixels.shape == (4, 6, 5) and planes.is_volume
    for k in range(4):  # rows run from the highest y (anterior) down, columns along x
        np.testing.assert_array_equal(planes.pixels[k], volume[:, ::-1, k].T)


def test_nifti_stored_lps_like_brats_is_reoriented_before_slicing(tmp_path):
    volume = np.random.default_rng(2).random((5, 6, 4)).astype(np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel x grows to the left, y to posterior
    planes = read_planes(write_nifti(tmp_path / "v.nii.gz", volume, lps), "nifti", slice_axis="axial")
    ras = volume[::-1, ::-1, :]
    for k in range(4):
        np.testing.assert_array_equal(planes.pixels[k], ras[:, ::-1, k].T)


def test_nifti_voxel_axis_slicing_keeps_the_stored_order_and_spacing(tmp_path):
    volume = np.random.default_rng(3).random((5, 6, 3)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 10.0, 1.0])  # a cardiac short-axis stack: thick slices
    planes = read_planes(write_nifti(tmp_path / "sa.nii.gz", volume, affine), "nifti", slice_axis="2")
    np.testing.assert_array_equal(planes.pixels, np.moveaxis(volume, 2, 0))
    assert planes.spacing == (1.5, 1.5) and planes.labels == ("axis2=0", "axis2=1", "axis2=2")
    sagittal = read_planes(write_nifti(tmp_path / "sa.nii.gz", volume, affine), "nifti", slice_axis="0")
    assert sagittal.pixels.shape == (5, 6, 3) and sagittal.spacing == (1.5, 10.0)


def test_unreadable_files_say_why(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    (tmp_path / "notes.dcm").write_text("patient notes")
    good = write_nifti(tmp_path / "v.nii.gz", np.ones((4, 4, 4), np.float32))
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:200]))
    write_nifti(tmp_path / "four_d.nii.gz", np.ones((4, 4, 4, 3), np.float32))
    with pytest.raises(UnreadableFileError, match="not an image"):
        read_planes(tmp_path / "junk.png", "image")
    with pytest.raises(UnreadableFileError, match="not a DICOM"):
        read_planes(tmp_path / "notes.dcm", "dicom")
    with pytest.raises(UnreadableFileError):
        read_planes(tmp_path / "cut.nii.gz", "nifti")
    with pytest.raises(UnreadableFileError, match="4-D image"):
        read_planes(tmp_path / "four_d.nii.gz", "nifti")


def test_file_kind_by_name_and_dicom_preamble(tmp_path):
    extensionless = write_dicom(tmp_path / "IM0001", np.zeros((2, 2), np.uint16))
    (tmp_path / "README").write_text("hello")
    assert file_kind(Path("a/b.JPEG")) == "image" and file_kind(Path("x.nii.gz")) == "nifti"
    assert file_kind(Path("s.dcm")) == "dicom" and file_kind(Path("table.csv")) is None
    assert file_kind(extensionless) == "dicom" and file_kind(tmp_path / "README") is None
