"""`hil-tune isp run` through the real console entry point (a subprocess), as a user would call it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import textured_rgb
from dng import write_dng
from PIL import Image

from hil_tune.unprocess import unprocess


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil_tune.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "scene.png"
    Image.fromarray(textured_rgb(48, 48)).save(path)
    return path


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_renders_png_with_sets_and_params_file(tmp_path, png):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"gain-r": 2.0, "filter-strength": 0.0}))
    out = tmp_path / "out.png"
    res = cli(
        "isp",
        "run",
        str(png),
        "--params",
        str(params),
        "--set",
        "ccm00=1.5",
        "--set",
        "noise-type=g1",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(out))
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8


def test_off_grid_value_is_quantized_with_a_warning(tmp_path, png):
    res = cli(
        "isp", "run", str(png), "--set", "filter-strength=0", "--set", "gain-r=1.234", "--out", str(tmp_path / "o.png")
    )
    assert res.returncode == 0, res.stderr
    assert "gain-r" in res.stderr and "1.23" in res.stderr and "warning" in res.stderr


def test_unknown_parameter(tmp_path, png):
    line = one_error_line(cli("isp", "run", str(png), "--set", "gain-x=1", "--out", str(tmp_path / "o.png")))
    assert "gain-x" in line


def test_out_of_range_value(tmp_path, png):
    line = one_error_line(cli("isp", "run", str(png), "--set", "usm-sigma=12", "--out", str(tmp_path / "o.png")))
    assert "usm-sigma" in line and "outside" in line
    assert not (tmp_path / "o.png").exists()


def test_bad_params_file(tmp_path, png):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    assert "p.json" in one_error_line(
        cli("isp", "run", str(png), "--params", str(bad), "--out", str(tmp_path / "o.png"))
    )


def test_missing_truncated_corrupt_and_unsupported_inputs(tmp_path):
    out = str(tmp_path / "o.png")
    assert "no such file" in one_error_line(cli("isp", "run", str(tmp_path / "none.dng"), "--out", out))
    corrupt = tmp_path / "corrupt.cr2"
    corrupt.write_bytes(b"II*\x00garbage" * 50)
    assert "corrupt.cr2" in one_error_line(cli("isp", "run", str(corrupt), "--out", out))
    frame = unprocess(textured_rgb(32, 32), seed=0)
    good = write_dng(tmp_path / "good.dng", frame.mosaic, "RGGB", black=256, white=4095)
    trunc = tmp_path / "trunc.dng"
    trunc.write_bytes(good.read_bytes()[:500])
    assert "trunc.dng" in one_error_line(cli("isp", "run", str(trunc), "--out", out))
    bad_png = tmp_path / "half.png"
    buf = tmp_path / "full.png"
    Image.fromarray(textured_rgb(64, 64)).save(buf)
    bad_png.write_bytes(buf.read_bytes()[:300])
    assert "half.png" in one_error_line(cli("isp", "run", str(bad_png), "--out", out))
    text = tmp_path / "notes.xyz"
    text.write_text("hello")
    assert "unsupported input" in one_error_line(cli("isp", "run", str(text), "--out", out))


def test_profile_typo(tmp_path, png):
    line = one_error_line(cli("isp", "run", str(png), "--profile", "synthetik", "--out", str(tmp_path / "o.png")))
    assert "synthetik" in line


def test_debug_shows_traceback(tmp_path, png):
    res = cli("--debug", "isp", "run", str(png), "--set", "gain-x=1", "--out", str(tmp_path / "o.png"))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_dng_input_renders(tmp_path):
    frame = unprocess(textured_rgb(32, 32), seed=0, cfa="BGGR")
    dng = write_dng(tmp_path / "scene.dng", frame.mosaic, "BGGR", black=256, white=4095)
    out = tmp_path / "o.png"
    res = cli("isp", "run", str(dng), "--set", "filter-strength=0", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)
