import numpy as np
import pytest
from conftest import textured_rgb

from hil_tune.errors import ParameterError, ProfileError
from hil_tune.isp import SyntheticISP
from hil_tune.profiles import parse_profile
from hil_tune.raw import CFA_PATTERNS
from hil_tune.unprocess import unprocess

RED = np.zeros((32, 32, 3), np.uint8)
RED[..., 0] = 210
RED[..., 1:] = 25


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_red_patch_comes_out_red(isp, cfa):
    frame = unprocess(RED, seed=4, cfa=cfa)
    out = isp.run_frame(frame, isp.camera_params(frame)).astype(float)
    r, g, b = out[..., 0].mean(), out[..., 1].mean(), out[..., 2].mean()
    assert r > 150 and g < 80 and b < 80, (cfa, r, g, b)


def test_pipeline_is_deterministic_with_denoise_on(isp, small_frame):
    params = {"filter-strength": 1.0, "noise-type": "g2w"}
    a = isp.run_frame(small_frame, params)
    b = isp.run_frame(small_frame, params)
    np.testing.assert_array_equal(a, b)


def test_batch_of_8_equals_8_single_calls(isp):
    frames = [unprocess(textured_rgb(32, 32, seed=k), seed=k, cfa="GRBG") for k in range(8)]
    mosaics = np.stack([f.normalized() for f in frames])
    params = isp.space.sample_params(8, seed=0, region=isp.profile.get_region("plausible"))
    batch = isp.run_batch(mosaics, "GRBG", params)
    singles = np.stack([isp.run(m, "GRBG", p) for m, p in zip(mosaics, params, strict=True)])
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, singles)


def test_stages_are_recorded(isp, small_frame):
    st = isp.stages(small_frame.normalized(), small_frame.cfa, {"filter-strength": 0.0})
    assert set(st.seconds) == {"denoise", "white_balance", "demosaic", "ccm", "sharpen", "tone", "jpeg"}
    assert st.rgb.shape == (64, 64, 3) and st.output.shape == (64, 64, 3)


def test_reused_scratch_never_leaks_into_an_output(isp):
    """run() renders into per-thread scratch arrays: outputs must be fresh, equal to stages(), and
    a later call (another size, other parameters, quality 0 included) must not change an earlier one."""
    frames = [unprocess(textured_rgb(32, 48, seed=k), seed=k, cfa="BGGR") for k in range(3)]
    params = isp.space.sample_params(3, seed=1, region=isp.profile.get_region("plausible"))
    for p in params:
        p["filter-strength"] = 0.0
    first = isp.run_frame(frames[0], params[0])
    kept = first.copy()
    np.testing.assert_array_equal(first, isp.stages(frames[0].normalized(), "BGGR", params[0]).output)
    isp.run_frame(frames[1], params[1])
    isp.run(unprocess(textured_rgb(24, 24, seed=9), seed=9, cfa="RGGB").normalized(), "RGGB", params[2])
    np.testing.assert_array_equal(first, kept)


def test_threads_rendering_at_once_do_not_share_scratch(isp):
    from concurrent.futures import ThreadPoolExecutor

    frames = [unprocess(textured_rgb(48, 48, seed=k), seed=k, cfa="RGGB") for k in range(8)]
    params = isp.space.sample_params(8, seed=2, region=isp.profile.get_region("plausible"))
    for p in params:
        p["filter-strength"] = 0.0
    serial = [isp.run_frame(f, p) for f, p in zip(frames, params, strict=True)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            threaded = list(pool.map(isp.run_frame, frames, params))
            for a, b in zip(serial, threaded, strict=True):
                np.testing.assert_array_equal(a, b)


def test_take_in_bands_equals_a_plain_lookup():
    from hil_tune.bands import MIN_ELEMENTS_TO_SPLIT, take_in_bands

    rng = np.random.default_rng(3)
    table = rng.integers(0, 256, 65536).astype(np.uint8)
    for shape in [(7, 5, 3), (MIN_ELEMENTS_TO_SPLIT // 300 + 3, 100, 3), (1, MIN_ELEMENTS_TO_SPLIT + 1)]:
        index = rng.integers(0, 65536, shape).astype(np.uint16)
        np.testing.assert_array_equal(take_in_bands(table, index), table[index])
    with pytest.raises(ValueError, match="out must be"):
        take_in_bands(table, index, out=np.empty(3, np.uint8))


def test_out_of_range_and_unknown_parameters_never_reach_a_block(isp, small_frame):
    with pytest.raises(ParameterError):
        isp.run_frame(small_frame, {"digital-gain": 2.5})
    with pytest.raises(ParameterError):
        isp.run_frame(small_frame, {"sharpness": 1.0})


def test_isp_refuses_a_profile_without_its_parameters():
    profile = parse_profile(
        {
            "name": "tiny",
            "params": [{"name": "a", "group": "g", "kind": "grid", "min": 0, "max": 1, "step": 1, "default": 0}],
        },
        "tiny.toml",
    )
    with pytest.raises(ProfileError, match="needs parameter"):
        SyntheticISP(profile)


def test_real_raw_renders(isp, raw_dir):
    from hil_tune.raw import read_raw

    frame = read_raw(raw_dir / "colorchart_Canon550D_ML.dng").center_crop(64, 64)
    out = isp.run_frame(frame, dict(isp.camera_params(frame), **{"filter-strength": 0.5}))
    assert out.shape == (64, 64, 3) and out.std() > 0
