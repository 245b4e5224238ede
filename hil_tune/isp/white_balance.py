"""White balance and digital gain, applied on the Bayer sites before demosaicking.

Gains act on the mosaic (as in a sensor-side ISP) so that demosaicking sees balanced colours; the
result is clipped to [0, 1] because that is what a fixed-point pipeline does with overflow, and
clipping is part of what the proxy must learn.
"""

from __future__ import annotations

import numpy as np

from hil_tune.raw import site_names


def gain_tile(cfa: str, gain_r: float, gain_g: float, gain_b: float, digital_gain: float) -> np.ndarray:
    """2x2 float32 tile of the total gain at each CFA site."""
    per_site = {"R": gain_r, "Gr": gain_g, "Gb": gain_g, "B": gain_b}
    tile = np.array([per_site[n] for n in site_names(cfa)], dtype=np.float32).reshape(2, 2)
    return tile * np.float32(digital_gain)


def white_balance(
    mosaic: np.ndarray, cfa: str, *, gain_r: float, gain_g: float, gain_b: float, digital_gain: float
) -> np.ndarray:
    """(H, W) float mosaic in [0, 1] -> gained and clipped float32 mosaic."""
    h, w = mosaic.shape
    tile = gain_tile(cfa, gain_r, gain_g, gain_b, digital_gain)
    out = mosaic.astype(np.float32, copy=True).reshape(h // 2, 2, w // 2, 2)
    out *= tile[None, :, None, :]
    np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(h, w)
