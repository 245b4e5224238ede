import numpy as np
from conftest import psnr, textured_rgb

from hil_tune.unprocess import random_rgb2cam, unprocess


def test_seeded_and_reference_kept():
    img = textured_rgb()
    a, b, c = unprocess(img, seed=5), unprocess(img, seed=5), unprocess(img, seed=6)
    np.testing.assert_array_equal(a.mosaic, b.mosaic)
    assert not np.array_equal(a.mosaic, c.mosaic)
    np.testing.assert_allclose(a.reference, img / 255.0, atol=1e-6)
    assert a.meta["ideal_params"] == b.meta["ideal_params"]


def test_rgb2cam_rows_sum_to_one():
    m = random_rgb2cam(np.random.default_rng(0))
    np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_noise_follows_shot_plus_read_model():
    flat = np.full((256, 256, 3), 128, np.uint8)
    clean = unprocess(flat, seed=9, noise=False)
    noisy = unprocess(flat, seed=9, noise=True)
    diff = noisy.normalized() - clean.normalized()
    level = clean.normalized()
    expected = level * noisy.meta["shot_noise"] + noisy.meta["read_noise"]
    # per-site variance within 20% of the model (12-bit quantisation adds ~ (1/3839)^2 / 12)
    for r in range(2):
        for c in range(2):
            v = diff[r::2, c::2].var()
            e = expected[r::2, c::2].mean() + 1 / (12 * 3839**2)
            assert abs(v - e) / e < 0.2


def test_ideal_parameters_invert_unprocessing(isp):
    """The ISP with the inverse draws reproduces the reference: unprocess and ISP agree on every step."""
    img = textured_rgb(64, 64)
    frame = unprocess(img, seed=11, cfa="GBRG", noise=False)
    params = dict(isp.camera_params(frame), **{"filter-strength": 0.0})
    out = isp.run_frame(frame, params)
    assert psnr(out, frame.reference) > 30
    default = isp.run_frame(frame, {"filter-strength": 0.0})
    assert psnr(default, frame.reference) < psnr(out, frame.reference) - 8
