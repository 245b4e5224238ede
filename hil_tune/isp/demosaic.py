"""Demosaicking: Malvar-He-Cutler (ICASSP 2004) "high-quality linear interpolation", or bilinear.

Malvar's method corrects bilinear interpolation with the Laplacian of the known colour at each site,
through four fixed 5x5 filters. Each filter runs once over the whole mosaic with OpenCV's filter2D
(SIMD, multi-threaded; sums of strided numpy views were 10x slower on a 2 MP frame), then each site takes
the filters its colour needs. Borders are mirrored without repeating the edge sample (OpenCV's
BORDER_REFLECT_101), which keeps the CFA parity, so border pixels are interpolated from the right colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from hil_tune.isp.workspace import Workspace, scratch
from hil_tune.raw import site_names

# Malvar-He-Cutler filters (coefficients x 8), as published.
_G_AT_RB = (
    np.array(
        [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]], dtype=np.float32
    )
    / 8
)
# Colour X at a green site whose row holds X (X's neighbours are left/right).
_X_AT_G_ROW = (
    np.array(
        [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
        dtype=np.float32,
    )
    / 8
)
# Colour X at a green site whose column holds X.
_X_AT_G_COL = _X_AT_G_ROW.T.copy()
# R at a B site, or B at an R site (diagonal neighbours).
_X_AT_OPPOSITE = (
    np.array(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
        dtype=np.float32,
    )
    / 8
)

# Bilinear filters on the same 5x5 footprint.
_BL_G_AT_RB = np.zeros((5, 5), np.float32)
_BL_G_AT_RB[1, 2] = _BL_G_AT_RB[3, 2] = _BL_G_AT_RB[2, 1] = _BL_G_AT_RB[2, 3] = 0.25
_BL_X_AT_G_ROW = np.zeros((5, 5), np.float32)
_BL_X_AT_G_ROW[2, 1] = _BL_X_AT_G_ROW[2, 3] = 0.5
_BL_X_AT_G_COL = _BL_X_AT_G_ROW.T.copy()
_BL_X_AT_OPPOSITE = np.zeros((5, 5), np.float32)
_BL_X_AT_OPPOSITE[1, 1] = _BL_X_AT_OPPOSITE[1, 3] = _BL_X_AT_OPPOSITE[3, 1] = _BL_X_AT_OPPOSITE[3, 3] = 0.25

FILTERS = {
    "malvar2004": (_G_AT_RB, _X_AT_G_ROW, _X_AT_G_COL, _X_AT_OPPOSITE),
    "bilinear": (_BL_G_AT_RB, _BL_X_AT_G_ROW, _BL_X_AT_G_COL, _BL_X_AT_OPPOSITE),
}


def _correlate(mosaic: np.ndarray, kernel: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """2-D correlation (filter2D does not flip the kernel) with parity-preserving mirrored borders."""
    return cv2.filter2D(mosaic, cv2.CV_32F, kernel, dst=dst, borderType=cv2.BORDER_REFLECT_101)


def demosaic(mosaic: np.ndarray, cfa: str, method: str = "malvar2004", *, work: Workspace | None = None) -> np.ndarray:
    """(H, W) float mosaic -> interleaved (H, W, 3) float32 linear RGB, clipped to [0, 1].

    Interleaved, OpenCV's native layout: every later numpy block runs one multi-channel OpenCV call
    on it (a 3-channel Gaussian blur is 3x faster than three planar ones). Each colour is assembled
    as a contiguous plane from the filter outputs, then the planes are interleaved once.
    """
    if method not in FILTERS:
        raise ValueError(f"unknown demosaic method {method!r}; known: {', '.join(FILTERS)}")
    m = np.ascontiguousarray(mosaic, dtype=np.float32)
    h, w = m.shape
    g_at_rb, x_row, x_col, x_opp = (
        _correlate(m, k, scratch(work, f"demosaic.filter{i}", (h, w))) for i, k in enumerate(FILTERS[method])
    )

    planes = [scratch(work, f"demosaic.{c}", (h, w)) for c in "RGB"]
    names = site_names(cfa)
    for dy in range(2):
        for dx in range(2):
            site = names[dy * 2 + dx]
            at = (slice(dy, None, 2), slice(dx, None, 2))
            if site in ("R", "B"):
                own, other = ("RGB".index(site), "RGB".index("B" if site == "R" else "R"))
                planes[own][at] = m[at]
                planes[1][at] = g_at_rb[at]
                planes[other][at] = x_opp[at]
            else:
                row_colour = "R" if site == "Gr" else "B"
                col_colour = "B" if site == "Gr" else "R"
                planes[1][at] = m[at]
                planes["RGB".index(row_colour)][at] = x_row[at]
                planes["RGB".index(col_colour)][at] = x_col[at]
    out = cv2.merge(planes, dst=scratch(work, "demosaic.rgb", (h, w, 3))).reshape(h, w, 3)  # 1-px-wide: keep 3 axes
    np.clip(out, 0.0, 1.0, out=out)
    return out
