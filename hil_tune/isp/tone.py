"""Colour and tone correction: the display transfer curve set in the profile (sRGB, gamma or linear).

Applied through a 65,536-entry lookup table: the curve's power function is the most expensive
elementwise operation of the pipeline, and the table is exact to 1/65535 of the input, far below
what 8-bit output can show.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from hil_tune.transfer import apply_curve

LUT_SIZE = 65536


@lru_cache(maxsize=8)
def tone_lut(curve: str, gamma: float) -> np.ndarray:
    x = np.linspace(0.0, 1.0, LUT_SIZE, dtype=np.float64)
    lut = apply_curve(x, curve, gamma).astype(np.float32)
    lut.setflags(write=False)
    return lut


def _lut_index(rgb: np.ndarray) -> np.ndarray:
    idx = np.multiply(rgb, np.float32(LUT_SIZE - 1), dtype=np.float32)
    np.clip(idx, 0.0, np.float32(LUT_SIZE - 1), out=idx)
    idx += np.float32(0.5)
    return idx.astype(np.uint16)


@lru_cache(maxsize=8)
def tone_lut_uint8(curve: str, gamma: float) -> np.ndarray:
    lut = (np.clip(tone_lut(curve, gamma), 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def tone_uint8(rgb: np.ndarray, *, curve: str = "srgb", gamma: float = 2.2) -> np.ndarray:
    """Planar linear (3, H, W) -> interleaved display-encoded uint8 (H, W, 3) in one table look-up.

    What the pipeline uses: curve and 8-bit quantisation folded into one table, so the frame is
    read once instead of through a float curve and a separate rounding pass.
    """
    planes = tone_lut_uint8(curve, gamma)[_lut_index(rgb)]  # planar, so the float data is read in order
    return cv2.merge(list(planes))  # interleave the 8-bit result (a quarter of the bytes of the floats)


def tone(rgb: np.ndarray, *, curve: str = "srgb", gamma: float = 2.2) -> np.ndarray:
    """Linear float in [0, 1] -> display-encoded float32 in [0, 1]."""
    return tone_lut(curve, gamma)[_lut_index(rgb)]
