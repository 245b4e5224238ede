"""Colour and tone correction: the display transfer curve set in the profile (sRGB, gamma or linear).

Applied through a 65,536-entry lookup table: the curve's power function is the most expensive
elementwise operation of the pipeline, and the table is exact to 1/65535 of the input, far below
what 8-bit output can show.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hil_tune.transfer import apply_curve

LUT_SIZE = 65536


@lru_cache(maxsize=8)
def tone_lut(curve: str, gamma: float) -> np.ndarray:
    x = np.linspace(0.0, 1.0, LUT_SIZE, dtype=np.float64)
    lut = apply_curve(x, curve, gamma).astype(np.float32)
    lut.setflags(write=False)
    return lut


def tone(rgb: np.ndarray, *, curve: str = "srgb", gamma: float = 2.2) -> np.ndarray:
    """Linear float in [0, 1] -> display-encoded float32 in [0, 1]."""
    idx = np.clip(rgb, 0.0, 1.0) * np.float32(LUT_SIZE - 1)
    idx += np.float32(0.5)
    return tone_lut(curve, gamma)[idx.astype(np.uint16)]
