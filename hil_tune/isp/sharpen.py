"""Unsharp mask: out = x + amount * (x - gaussian(x, sigma)), per channel, clipped to [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def unsharp_mask(rgb: np.ndarray, *, amount: float, sigma: float) -> np.ndarray:
    """Planar (3, H, W) float in [0, 1] -> sharpened float32. Borders are reflected, so flat edges stay flat."""
    x = rgb.astype(np.float32, copy=False)
    blur = gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)
    out = x - blur
    out *= np.float32(amount)
    out += x
    np.clip(out, 0.0, 1.0, out=out)
    return out
