"""Transfer curves between linear light and display-encoded values.

Shared by the ISP's tone block (forward) and by unprocessing (inverse): the unprocessed RAW must
invert exactly the curve the ISP applies, or the reference image would be unreachable by any
parameter set and the predictor would chase a moving target.
"""

from __future__ import annotations

import numpy as np

SRGB_THRESHOLD_LINEAR = 0.0031308
SRGB_THRESHOLD_ENCODED = 0.04045


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1] (input clipped)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= SRGB_THRESHOLD_LINEAR, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(
        x.dtype, copy=False
    )


def srgb_to_linear(y: np.ndarray) -> np.ndarray:
    """Inverse of linear_to_srgb (input clipped to [0, 1])."""
    y = np.clip(y, 0.0, 1.0)
    return np.where(y <= SRGB_THRESHOLD_ENCODED, y / 12.92, np.power((y + 0.055) / 1.055, 2.4)).astype(
        y.dtype, copy=False
    )


def apply_curve(x: np.ndarray, curve: str, gamma: float = 2.2) -> np.ndarray:
    """Forward tone curve by name: 'srgb', 'gamma' (x ** (1/gamma)) or 'linear'."""
    x = np.clip(x, 0.0, 1.0)
    if curve == "srgb":
        return linear_to_srgb(x)
    if curve == "gamma":
        return np.power(x, 1.0 / gamma).astype(x.dtype, copy=False)
    if curve == "linear":
        return x
    raise ValueError(f"unknown tone curve {curve!r}")


def invert_curve(y: np.ndarray, curve: str, gamma: float = 2.2) -> np.ndarray:
    """Inverse of apply_curve."""
    y = np.clip(y, 0.0, 1.0)
    if curve == "srgb":
        return srgb_to_linear(y)
    if curve == "gamma":
        return np.power(y, gamma).astype(y.dtype, copy=False)
    if curve == "linear":
        return y
    raise ValueError(f"unknown tone curve {curve!r}")
