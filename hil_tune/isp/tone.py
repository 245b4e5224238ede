"""Colour and tone correction: the display transfer curve set in the profile (sRGB, gamma or linear).

Applied through a 65,536-entry lookup table: the curve's power function is the most expensive
elementwise operation of the pipeline, and the table is exact to 1/65535 of the input, far below
what 8-bit output can show. The index is made by one saturating OpenCV conversion (rounding and
clipping in one pass) and the look-up runs in row bands on all cores (`bands`).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from hil_tune.bands import take_in_bands
from hil_tune.isp.workspace import Workspace, scratch
from hil_tune.transfer import apply_curve

LUT_SIZE = 65536


@lru_cache(maxsize=8)
def tone_lut(curve: str, gamma: float) -> np.ndarray:
    x = np.linspace(0.0, 1.0, LUT_SIZE, dtype=np.float64)
    lut = apply_curve(x, curve, gamma).astype(np.float32)
    lut.setflags(write=False)
    return lut


def _lut_index(rgb: np.ndarray, work: Workspace | None = None) -> np.ndarray:
    """Float in [0, 1] -> nearest table index; saturate_cast clips out-of-range values to 0 or 65535."""
    x = np.ascontiguousarray(rgb, dtype=np.float32)
    flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)  # 1-channel 2-D: a plain scalar multiply
    dst = scratch(work, "tone.index", flat.shape, np.uint16)
    return cv2.multiply(flat, float(LUT_SIZE - 1), dst=dst, dtype=cv2.CV_16U).reshape(x.shape)


@lru_cache(maxsize=8)
def tone_lut_uint8(curve: str, gamma: float) -> np.ndarray:
    lut = (np.clip(tone_lut(curve, gamma), 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def tone_uint8(
    rgb: np.ndarray, *, curve: str = "srgb", gamma: float = 2.2, work: Workspace | None = None
) -> np.ndarray:
    """Linear (H, W, 3) -> display-encoded uint8 (H, W, 3) in one table look-up.

    What the pipeline uses: curve and 8-bit quantisation folded into one table, so the frame is
    read once instead of through a float curve and a separate rounding pass.
    """
    index = _lut_index(rgb, work)
    return take_in_bands(tone_lut_uint8(curve, gamma), index, out=scratch(work, "tone", index.shape, np.uint8))


def tone(rgb: np.ndarray, *, curve: str = "srgb", gamma: float = 2.2) -> np.ndarray:
    """Linear float in [0, 1] -> display-encoded float32 in [0, 1]."""
    return take_in_bands(tone_lut(curve, gamma), _lut_index(rgb))
