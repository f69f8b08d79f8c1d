"""Dataset layouts: tiny fake ACDC, BraTS and ChestXRay trees and plain folders, loaded end to end."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.fakes import blob_volume, write_dicom, write_image, write_nifti
from vmddpm_deploy.data import LoadOptions, load_dataset
from vmddpm_deploy.errors import DataError


@pytest.fixture
def acdc(tmp_path):
    root = tmp_path / "ACDC" / "database"
    for split, patient in (("training", 1), ("training", 2), ("testing", 101)):
        folder = root / split / f"patient{patient:03d}"
        for frame in (1, 12):
            write_nifti(folder / f"patient{patient:03d}_frame{frame:02d}.nii.gz", blob_volume((24, 20, 3), seed=frame))
            write_nifti(folder / f"patient{patient:03d}_frame{frame:02d}_gt.nii.gz", np.ones((24, 20, 3), np.uint8))
        write_nifti(folder / f"patient{patient:03d}_4d.nii.gz", np.ones((24, 20, 3, 5), np.float32))
        (folder / "Info.cfg").write_text("ED: 1\nES: 12\n")
    return root


def test_acdc_loads_ed_and_es_frames_along_the_short_axis_stack(acdc):
    data = load_dataset(acdc, 8)
    assert data.layout == "acdc"
    assert len(data) == 3 * 2 * 3  # patients x frames x short-axis slices; no _gt, no _4d
    assert data.images.shape == (18, 1, 8, 8) and data.images.dtype == np.uint16
    assert data.names[0] == "testing/patient101/patient101_frame01.nii.gz#axis2=0"
    assert not any("_gt" in name or "_4d" in name for name in data.names)
    only_training = load_dataset(acdc / "training", 8)
    assert len(only_training) == 12 and only_training.layout == "acdc"


@pytest.fixture
def brats(tmp_path):
    root = tmp_path / "MICCAI_BraTS_2018_Data_Training"
    for grade, case in (("HGG", "Brats18_2013_2_1"), ("LGG", "Brats18_2013_0_1")):
        for index, modality in enumerate(("t1", "t1ce", "t2", "flair")):
            volume = blob_volume((16, 16, 10), empty_ends=2, seed=index)
            if modality == "flair":  # a marker that only the flair volumes carry
                volume[:4, :4, 2:-2] = 500.0
            write_nifti(root / grade / case / f"{case}_{modality}.nii.gz", volume, np.diag([-1.0, -1.0, 1.0, 1.0]))
        write_nifti(root / grade / case / f"{case}_seg.nii.gz", np.zeros((16, 16, 10), np.uint8))
    return root


def test_brats_loads_the_chosen_modality_and_drops_empty_slices(brats):
    flair = load_dataset(brats, 16, LoadOptions(modality="flair"))
    assert flair.layout == "brats" and flair.empty_slices == 2 * 4
    assert len(flair) == 2 * 6 and all("_flair.nii.gz#axial=" in name for name in flair.names)
    t2 = load_dataset(brats, 16, LoadOptions(modality="t2"))
    assert all("_t2.nii.gz" in name for name in t2.names)
    # The flair marker sits at low voxel x, y, which this affine puts at the patient's right and
    # anterior: the top rows (anterior up) and last columns (x ascending) of the RAS view.
    assert flair.images[:, 0, :4, -4:].min() == 65535 and t2.images[:, 0, :4, -4:].max() < 65535


def test_brats_without_the_modality_lists_what_it_has(brats):
    for path in brats.rglob("*_t1ce.nii.gz"):
        path.unlink()
    with pytest.raises(DataError, match="no t1ce files; it has flair, t1, t2"):
        load_dataset(brats, 16, LoadOptions(modality="t1ce"))


@pytest.fixture
def chestxray(tmp_path):
    rng = np.random.default_rng(0)
    outer = tmp_path / "archive"
    for root in (outer / "chest_xray", outer / "chest_xray" / "chest_xray", outer / "__MACOSX" / "chest_xray"):
        for split, count in (("train", 3), ("test", 2), ("val", 1)):
            for cls in ("NORMAL", "PNEUMONIA"):
                for k in range(count):
                    pixels = rng.integers(0, 256, (30 + k, 40), dtype=np.uint8)
                    write_image(root / split / cls / f"IM-{k:04d}.jpeg", pixels)
    (outer / "chest_xray" / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\1")
    return outer


def test_chestxray_takes_one_split_of_the_shallowest_copy(chestxray):
    train = load_dataset(chestxray, 8)
    assert train.layout == "chestxray" and len(train) == 6
    assert train.names[0] == "train/NORMAL/IM-0000.jpeg"
    assert len(load_dataset(chestxray, 8, LoadOptions(split="all"))) == 12
    assert len(load_dataset(chestxray, 8, LoadOptions(split="val"))) == 2


def test_plain_folder_mixes_images_dicom_and_nifti(tmp_path):
    write_image(tmp_path / "a" / "x.png", np.full((10, 10), 200, np.uint8))
    write_dicom(tmp_path / "b" / "slice.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    write_nifti(tmp_path / "c" / "vol.nii", blob_volume((12, 12, 5)))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path, 8)
    assert data.layout == "folder" and len(data) == 1 + 1 + 5
    assert data.names[:2] == ("a/x.png", "b/slice.dcm")
    one_file = load_dataset(tmp_path / "c" / "vol.nii", 8)
    assert len(one_file) == 5 and one_file.names[0] == "vol.nii#axial=0"


def test_missing_empty_and_mismatched_paths_are_data_errors(tmp_path, acdc):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image, DICOM or NIfTI files"):
        load_dataset(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="does not look like BraTS"):
        load_dataset(acdc, 8, LoadOptions(layout="brats"))
    with pytest.raises(DataError, match="does not look like the Kermany ChestXRay"):
        load_dataset(acdc, 8, LoadOptions(layout="chestxray"))


def test_unreadable_files_stop_the_load_or_are_skipped_and_counted(tmp_path):
    for k in range(3):
        write_image(tmp_path / f"good{k}.png", np.full((6, 6), 50 * k, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "broken.dcm").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"cannot read .*broken\.dcm: not a DICOM.*--skip-bad-files"):
        load_dataset(tmp_path, 8)
    data = load_dataset(tmp_path, 8, LoadOptions(skip_bad_files=True))
    assert len(data) == 3 and [p.rsplit("/", 1)[-1] for p, _ in data.skipped] == ["broken.dcm", "broken.png"]
    assert "2 unreadable files skipped" in data.summary()
    for k in range(3):
        (tmp_path / f"good{k}.png").unlink()
    with pytest.raises(DataError, match="none of the 2 files"):
        load_dataset(tmp_path, 8, LoadOptions(skip_bad_files=True))


def test_all_empty_volumes_say_how_to_keep_them(tmp_path):
    write_nifti(tmp_path / "dark.nii.gz", np.zeros((8, 8, 4), np.float32))
    with pytest.raises(DataError, match="all 4 slices .* were empty.*--min-foreground"):
        load_dataset(tmp_path, 8)
