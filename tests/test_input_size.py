"""One least input size, derived from what the blocks need, refused with one line wherever images
enter: bm3d killed the process (SIGSEGV) on a 16x16 frame before it was guarded."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.errors import InputError, ParameterError
from hil_tune.inputs import load_input
from hil_tune.isp.denoise import MIN_SIDE, denoise_packed
from hil_tune.isp.firmwares import isp_for
from hil_tune.profiles import load_profile

NR_ON = {"filter-strength": 1.0, "noise-type": "g2", "noise-var": 0.3}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["synthetic", "foreign", "handset", "studio"]))
def test_any_size_renders_or_is_refused_with_a_reason(tmp_path_factory, h, w, firmware):
    """Random sizes from 1 to 64 pixels: a render of the right shape, or InputError; never a crash."""
    path = tmp_path_factory.mktemp("size") / "img.png"
    rng = np.random.default_rng(h * 100 + w)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    prof = load_profile("synthetic")
    isp = isp_for(firmware, prof)
    try:
        frame = load_input(path)
        out = isp.run_frame(frame, NR_ON)
    except InputError as err:
        assert "smaller than" in str(err) or "must be even" in str(err) or "too small" in str(err), err
        assert min(h, w) < MIN_SIDE or h % 2 or w % 2
    else:
        assert out.shape == (*frame.shape, 3) and min(frame.shape) >= MIN_SIDE


def test_the_limit_is_where_bm3d_stops_crashing():
    """Planes of MIN_SIDE / 2 are the least bm3d runs on; one less is refused before the binary."""
    planes = np.random.default_rng(0).random((MIN_SIDE // 2, MIN_SIDE // 2, 4), dtype=np.float32)
    kw = {"filter_strength": 1.0, "noise_type": "g2", "noise_var": 0.3, "lambda_thr3d": 3.0, "mu2": 0.4}
    assert denoise_packed(planes, **kw).shape == planes.shape
    with pytest.raises(InputError, match="below"):
        denoise_packed(planes[1:, 1:], **kw)


@pytest.mark.parametrize("size", [16, 2])
def test_isp_run_on_a_tiny_image_is_one_line_and_exit_2(tmp_path, size):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)
    res = subprocess.run([sys.executable, "-m", "hil_tune.cli", "isp", "run", str(path), "--out",
                          str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert f"{MIN_SIDE}x{MIN_SIDE}" in res.stderr


def test_a_sweep_of_tiny_patches_is_refused_at_planning():
    with pytest.raises(ParameterError, match=f"at least {MIN_SIDE}"):
        build_plan(load_profile("synthetic"), resolve_sources(["bundled:coffee"]), samples_per_source=2, patch=16)


def _png_claiming(path, width, height):
    """A 1x1 PNG whose header claims width x height (its IDAT is not that big: only the header
    may be read before the budget refuses it)."""
    import struct
    import zlib

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    _png_claiming(big, 12000, 12000)  # 144 MP: over the default 64 MP budget
    with pytest.raises(InputError, match=r"12000x12000 \(144,000,000 pixels\) is over the pixel budget of 64,000,000"):
        load_input(big)
    monkeypatch.setenv("HIL_TUNE_MAX_PIXELS", "1000000000")  # past ours, Pillow's own guard speaks
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 30000, 30000)
    with pytest.raises(InputError, match=r"bomb\.png: Image size"):
        load_input(bomb)
    monkeypatch.setenv("HIL_TUNE_MAX_PIXELS", "500")
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 32)).save(small)
    with pytest.raises(InputError, match=r"\(1,024 pixels\) is over the pixel budget of 500"):
        load_input(small)
    monkeypatch.delenv("HIL_TUNE_MAX_PIXELS")
    res = subprocess.run(
        [sys.executable, "-m", "hil_tune.cli", "isp", "run", str(big), "--out", str(tmp_path / "o.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "pixel budget" in res.stderr and "Traceback" not in res.stderr, res.stderr


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64))
def test_capture_on_any_size_sweeps_or_is_refused_with_a_reason(tmp_path_factory, h, w, patch):
    """Random source and patch sizes from 1 to 64 pixels through planning and one captured sample:
    a sample of the patch's size, or one clear error; never a crash."""
    from capture_helpers import fast_profile

    from hil_tune.capture.dataset import DatasetFolder, DatasetReader
    from hil_tune.capture.loop import CaptureSettings, run_capture

    tmp = tmp_path_factory.mktemp("csize")
    path = tmp / "src.png"
    Image.fromarray(np.random.default_rng(h * 100 + w).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    prof_path = fast_profile(tmp)
    try:
        plan = build_plan(load_profile(prof_path), resolve_sources([str(path)]), samples_per_source=1,
                          patch=patch, region="fast")  # fmt: skip
    except (InputError, ParameterError) as err:
        assert str(err) and "\n" not in str(err)
        return
    folder = DatasetFolder(tmp / "ds")
    folder.create(plan)
    result = run_capture(folder.root, CaptureSettings("sim", {"sensor_size": 32}, profile=str(prof_path)))
    assert result.failed == {} and result.written == 1
    _, _, ph, pw = plan.rows[0].patch  # a source smaller than the patch gives one smaller patch
    assert (ph, pw) == (min(patch, h) // 2 * 2, min(patch, w) // 2 * 2)
    assert DatasetReader(folder.root).sample(0, check=True).output.shape == (ph, pw, 3)
