"""Reading image sets: PNG 8/16-bit, NPZ, sample's layouts, the bundled slices, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vmddpm_deploy.errors import DataError, InvalidArgumentError
from vmddpm_deploy.evaluation.image_sets import images_to_uint8, open_image_set
from vmddpm_deploy.outputs import to_uint16, write_npz, write_png16


def read_all(image_set) -> np.ndarray:
    return np.concatenate(list(image_set.batches(3)))


@pytest.fixture
def uint16_images() -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 65536, size=(5, 1, 12, 10), dtype=np.uint16)
    images[0, 0, 0, :4] = [0, 128, 129, 65535]  # rounding edges of v / 257
    return images


def test_sixteen_bit_png_folder_equals_npz_and_rounds_v_over_257(tmp_path, uint16_images):
    pngs, npzs = tmp_path / "pngs", tmp_path / "npz"
    pngs.mkdir()
    npzs.mkdir()
    for k, image in enumerate(uint16_images):
        write_png16(pngs / f"{k:05d}.png", image)
    write_npz(npzs / "samples.npz", np.arange(5), uint16_images)
    from_png, from_npz = read_all(open_image_set(pngs)), read_all(open_image_set(npzs / "samples.npz"))
    expected = np.floor(uint16_images / 257.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(from_png, expected)
    np.testing.assert_array_equal(from_npz, expected)
    assert list(from_png[0, 0, 0, :4]) == [0, 0, 1, 255]


def test_eight_bit_grey_rgb_and_alpha_pngs(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    (tmp_path / "grey").mkdir()
    (tmp_path / "rgba").mkdir()
    for k in range(2):
        Image.fromarray(grey).save(tmp_path / "grey" / f"{k}.png")
        Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba" / f"{k}.png")
    grey_set, rgba_set = open_image_set(tmp_path / "grey"), open_image_set(tmp_path / "rgba")
    assert grey_set.shape == (1, 9, 7) and rgba_set.shape == (3, 9, 7)
    np.testing.assert_array_equal(read_all(grey_set)[1, 0], grey)
    np.testing.assert_array_equal(read_all(rgba_set)[0], rgba[..., :3].transpose(2, 0, 1))


def test_float_images_are_quantised_like_sample_stores_them():
    x = np.random.default_rng(2).uniform(-1.2, 1.2, size=(3, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(images_to_uint8(x, "x"), images_to_uint8(to_uint16(x), "x"))
    np.testing.assert_array_equal(images_to_uint8(x[:, 0], "x"), images_to_uint8(x, "x"))  # (n, H, W) is grey


def test_sample_layouts_skip_progress_files_and_parts(tmp_path, uint16_images):
    folder = tmp_path / "samples"
    (folder / ".parts").mkdir(parents=True)
    for k, image in enumerate(uint16_images[:3]):
        write_png16(folder / f"{k:05d}.png", image)
    (folder / "progress.json").write_text("{}")
    write_npz(folder / ".parts" / "00000-00002.npz", np.arange(3), uint16_images[:3])
    assert len(open_image_set(folder)) == 3
    shards = tmp_path / "shards"
    shards.mkdir()
    write_npz(shards / "samples.shard-0-of-2.npz", np.array([0, 2, 4]), uint16_images[[0, 2, 4]])
    write_npz(shards / "samples.shard-1-of-2.npz", np.array([1, 3]), uint16_images[[1, 3]])
    assert len(open_image_set(shards)) == 5


def test_subset_is_fixed_sorted_and_capped(tmp_path, uint16_images):
    write_npz(tmp_path / "s.npz", np.arange(5), uint16_images)
    image_set = open_image_set(tmp_path / "s.npz")
    first, again = read_all(image_set.subset(3)), read_all(image_set.subset(3))
    np.testing.assert_array_equal(first, again)
    rows = [int(np.flatnonzero((read_all(image_set) == row).all(axis=(1, 2, 3)))[0]) for row in first]
    assert rows == sorted(rows) and len(set(rows)) == 3
    assert image_set.subset(3).fingerprint != image_set.fingerprint
    assert image_set.subset(50) is image_set
    with pytest.raises(InvalidArgumentError):
        image_set.subset(0)


@pytest.mark.parametrize(("size", "count"), [(32, 81), (8, 81)])
def test_bundled_slices_at_the_requested_size(size, count):
    image_set = open_image_set("bundled", size_hint=size)  # bare "bundled" is the held-out split
    assert image_set.source == "bundled:heldout" and len(image_set) == count
    assert read_all(image_set).shape == (count, 1, size, size)
    assert open_image_set("bundled:train", size_hint=size).fingerprint != image_set.fingerprint


def test_errors_name_the_problem(tmp_path, uint16_images):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no PNG or NPZ images"):
        open_image_set(empty)
    with pytest.raises(DataError, match="does not exist"):
        open_image_set(tmp_path / "missing")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_png16(mixed / "0.png", uint16_images[0])
    write_npz(mixed / "s.npz", np.arange(1), uint16_images[:1])
    with pytest.raises(DataError, match="both PNG files"):
        open_image_set(mixed)
    np.savez(tmp_path / "other.npz", pixels=uint16_images)
    with pytest.raises(DataError, match="no 'images' array \\(it has pixels\\)"):
        open_image_set(tmp_path / "other.npz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an .npz"):
        open_image_set(tmp_path / "notes.txt")
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    write_png16(sizes / "0.png", uint16_images[0])
    write_png16(sizes / "1.png", uint16_images[0][:, :6])
    with pytest.raises(DataError, match="1.png is 10x6 grey but 0.png .* is 10x12 grey"):
        read_all(open_image_set(sizes))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot read .*0.png as a PNG image"):
        open_image_set(broken)
    with pytest.raises(DataError, match="4 channels|grey or RGB"):
        images_to_uint8(np.zeros((2, 5, 4, 4), np.uint8), "x")
