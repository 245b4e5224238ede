"""Shared fixtures: the bundled synthetic profile, small unprocessed frames, and the real-RAW folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hil_tune.isp import SyntheticISP
from hil_tune.profiles import Profile, load_profile
from hil_tune.unprocess import unprocess


@pytest.fixture(scope="session")
def synthetic() -> Profile:
    return load_profile("synthetic")


@pytest.fixture(scope="session")
def isp(synthetic: Profile) -> SyntheticISP:
    return SyntheticISP(synthetic)


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    root = os.environ.get("HIL_TUNE_RAW_DIR")
    if not root:
        pytest.skip("HIL_TUNE_RAW_DIR is unset: real camera RAW files are not available (CI sets it)")
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f"HIL_TUNE_RAW_DIR={root} is not a folder")
    return path


def textured_rgb(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colourful test image (uint8) with edges, made here rather than downloaded."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + 1), 0.5 + 0.4 * np.cos(5 * yy), 0.4 + 0.3 * np.sin(4 * (xx + yy))], -1)
    img[h // 4 : h // 2, w // 4 : w // 2] = rng.uniform(0.2, 0.9, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def small_frame():
    return unprocess(textured_rgb(), seed=3, cfa="RGGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))
