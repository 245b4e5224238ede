from pathlib import Path

import numpy as np
import pytest
from dng import write_dng

from hil_tune.errors import InputError
from hil_tune.raw import CFA_PATTERNS, RawFrame, pack3, pack4, patches, read_raw, shift_cfa, unpack4
from hil_tune.unprocess import unprocess

RED = np.zeros((32, 32, 3), np.uint8)
RED[..., 0] = 200
RED[..., 1:] = 30


def test_shift_cfa():
    assert shift_cfa("RGGB", 0, 1) == "GRBG"
    assert shift_cfa("RGGB", 1, 0) == "GBRG"
    assert shift_cfa("RGGB", 1, 1) == "BGGR"
    assert shift_cfa("GRBG", 2, 4) == "GRBG"


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_pack4_is_canonical_and_invertible(cfa):
    rgb = np.zeros((4, 6, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1.0, 2.0, 3.0
    from hil_tune.raw import mosaic_rgb

    m = mosaic_rgb(rgb, cfa)
    packed = pack4(m, cfa)
    assert packed.shape == (2, 3, 4)
    np.testing.assert_array_equal(packed[..., 0], 1.0)  # R
    np.testing.assert_array_equal(packed[..., 1:3], 2.0)  # Gr, Gb
    np.testing.assert_array_equal(packed[..., 3], 3.0)  # B
    np.testing.assert_array_equal(unpack4(packed, cfa), m)
    from hil_tune.raw import pack4_rgb

    varied = np.random.default_rng(0).random((4, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(pack4_rgb(varied, cfa), pack4(mosaic_rgb(varied, cfa), cfa))
    p3 = pack3(m, cfa)
    assert p3.shape == (4, 6, 3)
    assert set(np.unique(p3[..., 0])) == {0.0, 1.0} and set(np.unique(p3[..., 2])) == {0.0, 3.0}
    assert (p3 > 0).sum(axis=-1).max() == 1  # exactly one colour per site


def test_pack4_batched():
    m = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    assert pack4(m, "GBRG").shape == (5, 4, 4, 4)
    np.testing.assert_array_equal(unpack4(pack4(m, "GBRG"), "GBRG"), m)


@pytest.mark.parametrize(("y", "x"), [(0, 0), (1, 0), (0, 1), (3, 5)])
def test_crop_keeps_colours_at_any_offset(y, x):
    frame = unprocess(RED, seed=0, cfa="RGGB", noise=False)
    sub = frame.crop(y, x, 16, 16)
    assert sub.cfa == shift_cfa("RGGB", y, x)
    packed = pack4(sub.normalized(), sub.cfa)
    # Whatever the offset, the canonical R plane holds the red sites.
    assert packed[..., 0].mean() > 2 * packed[..., 3].mean()


def test_patches_keep_cfa_and_tile():
    frame = unprocess(np.zeros((100, 130, 3), np.uint8) + 90, seed=1, cfa="GRBG")
    ps = patches(frame, size=32)
    assert len(ps) == (100 // 32) * (130 // 32)
    assert all(p.cfa == "GRBG" and p.shape == (32, 32) for p in ps)
    assert all(p.reference.shape == (32, 32, 3) for p in ps)
    with pytest.raises(InputError):
        patches(frame, size=32, stride=31)


def test_normalized_uses_per_site_black_level():
    m = np.array([[110, 220], [330, 440]], np.uint16)
    f = RawFrame(mosaic=m, cfa="RGGB", black_level=(10, 20, 30, 40), white_level=1010)
    np.testing.assert_allclose(f.normalized(), [[0.1, 200 / 990], [300 / 980, 400 / 970]], rtol=1e-6)
    with pytest.raises(InputError):
        f.crop(0, 1, 2, 1)


@pytest.mark.parametrize("black", [(64.0,) * 4, (60.0, 64.0, 70.0, 58.0)], ids=["one-black", "per-site"])
@pytest.mark.parametrize("shape", [(6, 8), (700, 420)], ids=["inline", "threaded"])
def test_16bit_level_table_is_bit_identical_to_the_arithmetic(black, shape):
    """uint16 mosaics are levelled by table look-up; the float path computes the same thing."""
    codes = np.random.default_rng(5).integers(0, 4096, shape).astype(np.uint16)
    codes[0, :4] = [0, 63, 4000, 4095]  # below black, above white
    table = RawFrame(mosaic=codes, cfa="BGGR", black_level=black, white_level=3900)
    arith = RawFrame(mosaic=codes.astype(np.float32), cfa="BGGR", black_level=black, white_level=3900)
    out = table.normalized()
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(out, arith.normalized())


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_dng_written_by_pidng_reads_back(tmp_path, cfa):
    frame = unprocess(RED, seed=2, cfa=cfa)
    path = write_dng(tmp_path / f"red_{cfa}.dng", frame.mosaic, cfa, black=256, white=4095)
    back = read_raw(path)
    assert back.cfa == cfa
    assert back.black_level == (256.0,) * 4 and back.white_level == 4095.0
    np.testing.assert_array_equal(back.mosaic, frame.mosaic)


def test_missing_truncated_and_corrupt_raw_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_raw(tmp_path / "nope.dng")
    garbage = tmp_path / "garbage.nef"
    garbage.write_bytes(b"\x00\x01not a raw file" * 100)
    with pytest.raises(InputError, match=r"garbage\.nef"):
        read_raw(garbage)
    frame = unprocess(RED, seed=2)
    good = write_dng(tmp_path / "good.dng", frame.mosaic, "RGGB", black=256, white=4095)
    truncated = tmp_path / "truncated.dng"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(InputError, match=r"truncated\.dng"):
        read_raw(truncated)


# -- real camera files (HIL_TUNE_RAW_DIR; see ../shared/data/raw/SOURCES.md) --------------------------


def test_real_kodak_kdc(raw_dir: Path):
    f = read_raw(raw_dir / "RAW_KODAK_DC50.KDC")
    assert f.cfa == "GRBG" and f.shape == (512, 768) and f.mosaic.dtype == np.uint16
    assert f.black_level == (0.0,) * 4 and f.white_level == 16383.0


def test_real_canon_dng_uses_visible_area(raw_dir: Path):
    f = read_raw(raw_dir / "colorchart_Canon550D_ML.dng")
    assert f.cfa == "RGGB" and f.shape == (1156, 1734)
    assert f.black_level == (2056.0,) * 4 and f.white_level == 15000.0
    assert f.as_shot_wb is not None and f.as_shot_wb[0] > 1.5  # daylight-ish red gain
    assert f.rgb_cam is not None and np.allclose(f.rgb_cam.sum(axis=1), 1.0, atol=0.05)
    norm = f.normalized()
    assert norm.min() >= 0.0 and norm.max() <= 1.0 and norm.mean() > 0.01
