"""Unsharp mask: out = x + amount * (x - gaussian(x, sigma)), per channel, clipped to [0, 1].

The blur is OpenCV's separable Gaussian (SIMD, truncated at 4 sigma like scipy's default) over the
interleaved image in one call: 80 ms per 2 MP frame with scipy.ndimage, 15 ms as three planar OpenCV
calls, 5 ms as one 3-channel call, with the same result to 2e-7.
"""

from __future__ import annotations

import cv2
import numpy as np

from hil_tune.isp.workspace import Workspace, scratch

# A Gaussian blur of width sigma is truncated at this many sigmas (scipy.ndimage's default), in the
# numpy ISP, the foreign firmware and the proxies alike.
BLUR_TRUNCATE = 4.0


def blur_radius(sigma: float) -> int:
    """Taps on each side of a Gaussian of width `sigma`: int(4 sigma + 0.5), at least 1."""
    return max(1, int(BLUR_TRUNCATE * sigma + 0.5))


def unsharp_mask(rgb: np.ndarray, *, amount: float, sigma: float, work: Workspace | None = None) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> sharpened float32. Borders are reflected, so flat edges stay flat."""
    x = np.ascontiguousarray(rgb, dtype=np.float32)
    radius = blur_radius(sigma)
    ksize = (2 * radius + 1, 2 * radius + 1)
    # BORDER_REFLECT is scipy's "reflect" (edge sample repeated): a flat border stays flat.
    blur = cv2.GaussianBlur(
        x, ksize, sigma, dst=scratch(work, "usm.blur", x.shape), borderType=cv2.BORDER_REFLECT
    ).reshape(x.shape)
    # x + a (x - blur) = (1 + a) x - a blur, in one SIMD pass
    out = cv2.addWeighted(x, 1.0 + amount, blur, -amount, 0.0, dst=scratch(work, "usm", x.shape)).reshape(x.shape)
    np.clip(out, 0.0, 1.0, out=out)
    return out
