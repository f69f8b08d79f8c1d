"""Normalisation, empty-slice filtering and square resizing of raw planes."""

from __future__ import annotations

import numpy as np
import pytest

from vmddpm_deploy.data.preprocess import Intensity, normalise, prepare_planes, resize_square, uint16_to_unit
from vmddpm_deploy.data.readers import RawPlanes
from vmddpm_deploy.errors import InvalidArgumentError


def ramp(n: int = 101) -> RawPlanes:
    return RawPlanes(np.arange(n, dtype=np.float32).reshape(1, 1, n))


def test_percentile_window_maps_the_file_range_to_unit():
    x = normalise(ramp(), Intensity(percentiles=(0.0, 100.0)))
    np.testing.assert_allclose(x[0, 0], np.linspace(0, 1, 101), atol=1e-6)
    x = normalise(ramp(), Intensity(percentiles=(10.0, 90.0)))  # 10th..90th percentile: values 10..90
    assert x[0, 0, 10] == 0.0 and x[0, 0, 90] == 1.0 and x[0, 0, 50] == pytest.approx(0.5)


def test_fixed_window_clips_outside_and_monochrome1_inverts():
    x = normalise(ramp(), Intensity(window=(25.0, 75.0)))
    assert x[0, 0, :26].max() == 0.0 and x[0, 0, 75:].min() == 1.0 and x[0, 0, 50] == pytest.approx(0.5)
    inverted = normalise(RawPlanes(ramp().pixels, invert=True), Intensity(window=(25.0, 75.0)))
    np.testing.assert_allclose(inverted, 1.0 - x)


def test_constant_file_is_background_and_bad_windows_are_refused():
    assert normalise(RawPlanes(np.full((1, 3, 3), 7.0, np.float32)), Intensity()).max() == 0.0
    with pytest.raises(InvalidArgumentError, match="LOW < HIGH"):
        Intensity(window=(5.0, 5.0))
    with pytest.raises(InvalidArgumentError, match="percentiles"):
        Intensity(percentiles=(50.0, 101.0))


def test_pad_keeps_the_whole_image_and_its_aspect():
    x = np.ones((1, 10, 20), np.float32)  # twice as wide as high
    out = resize_square(x, (1.0, 1.0), 8, "pad")
    assert out.shape == (1, 8, 8)
    assert out[0, 2:6].min() == pytest.approx(1.0) and out[0, :2].max() == 0.0 and out[0, 6:].max() == 0.0


def test_crop_keeps_the_centre():
    x = np.zeros((1, 8, 16), np.float32)
    x[:, :, 4:12] = 1.0  # the centre half of the columns
    out = resize_square(x, (1.0, 1.0), 8, "crop")
    np.testing.assert_allclose(out, 1.0)


def test_anisotropic_pixels_are_resized_to_their_physical_aspect():
    x = np.ones((1, 10, 10), np.float32)  # rows 2 mm apart, columns 1 mm: 20 mm high, 10 mm wide
    out = resize_square(x, (2.0, 1.0), 8, "pad")
    assert out[0, :, 2:6].min() == pytest.approx(1.0) and out[0, :, :2].max() == 0.0 and out[0, :, 6:].max() == 0.0


def test_prepare_drops_empty_volume_slices_and_round_trips_through_uint16():
    pixels = np.zeros((4, 16, 16), np.float32)
    pixels[1, 4:12, 4:12] = 100.0
    pixels[2, 2:14, 2:14] = 50.0
    planes = RawPlanes(pixels, labels=("z=0", "z=1", "z=2", "z=3"), is_volume=True)
    prepared = prepare_planes(planes, Intensity(window=(0.0, 100.0)), 16, min_foreground=0.1)
    assert prepared.empty == 2 and prepared.labels == ("z=1", "z=2")
    assert prepared.images.dtype == np.uint16 and prepared.images.shape == (2, 16, 16)
    back = uint16_to_unit(prepared.images).numpy()  # [-1, 1]
    np.testing.assert_allclose(back, pixels[1:3] / 100.0 * 2.0 - 1.0, atol=1.0 / 65535)


def test_single_images_are_never_filtered_as_empty():
    planes = RawPlanes(np.zeros((1, 4, 4), np.float32))
    assert prepare_planes(planes, Intensity(), 4).images.shape == (1, 4, 4)
