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
    assert st.rgb.shape == (3, 64, 64) and st.output.shape == (64, 64, 3)


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
