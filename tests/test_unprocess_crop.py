"""A crop is taken before unprocessing, and it is the same crop: issue [Reliability] item 5."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from hil_tune.inputs import bundled_frame, load_input
from hil_tune.unprocess import unprocess, unprocess_crop


def _same(a, b):
    assert a.shape == b.shape and a.cfa == b.cfa and a.black_level == b.black_level
    assert np.array_equal(a.mosaic, b.mosaic) and np.array_equal(a.reference, b.reference)
    assert a.meta == b.meta


@pytest.mark.parametrize("shape", [(301, 419), (64, 64), (2, 9)])
@pytest.mark.parametrize("crop", [2, 32, 128, 1000])
def test_cropping_first_gives_the_crop_of_the_whole_unprocessing(shape, crop):
    """Noise included: every pixel's noise depends on the draw and its place in the photo only."""
    img = np.random.default_rng(sum(shape) + crop).integers(0, 256, (*shape, 3), dtype=np.uint8)
    _same(unprocess_crop(img, crop, seed=7), unprocess(img, seed=7).center_crop(crop, crop))


def test_files_and_bundled_photos_crop_first_with_the_same_result(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (150, 211, 3), dtype=np.uint8)).save(path)
    _same(load_input(path, seed=2, crop=64), load_input(path, seed=2).center_crop(64, 64))
    _same(bundled_frame("coffee", seed=1, crop=96), bundled_frame("coffee", seed=1).center_crop(96, 96))
    with pytest.raises(ValueError, match="even"):
        unprocess(np.zeros((8, 8, 3), np.uint8), seed=0, origin=(1, 0))


def test_memory_follows_the_crop_not_the_photo(tmp_path):
    """A 6 MP photo cropped to 128 px: the peak is the decoded photo and little more, where the
    whole unprocessing holds several float copies of it."""
    path = tmp_path / "big.png"
    img = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, compress_level=1)
    decoded = img.nbytes
    del img

    def peak(**kw) -> int:
        tracemalloc.start()
        try:
            load_input(path, seed=0, **kw)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    cropped, whole = peak(crop=128), peak()
    assert cropped < 3 * decoded, (cropped, decoded)
    assert whole > 5 * cropped, (whole, cropped)
