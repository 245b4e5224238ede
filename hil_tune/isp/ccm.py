"""3x3 colour space transform from camera RGB to linear sRGB."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from hil_tune.isp.workspace import Workspace, scratch


def ccm_from_params(params: Mapping[str, float | str]) -> np.ndarray:
    """The matrix M (rows = output channels) from the ccmIJ parameters."""
    return np.array([[float(params[f"ccm{i}{j}"]) for j in range(3)] for i in range(3)], dtype=np.float32)


def color_matrix(rgb: np.ndarray, matrix: np.ndarray, *, work: Workspace | None = None) -> np.ndarray:
    """(H, W, 3): out[..., i] = sum_j M[i, j] * rgb[..., j], clipped to [0, 1] (a fixed-point pipeline saturates).

    OpenCV's per-pixel transform does the 3x3 product in one SIMD pass over the interleaved image.
    """
    m = np.asarray(matrix, dtype=np.float32)
    if m.shape != (3, 3):
        raise ValueError(f"colour matrix must be 3x3, got {m.shape}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    x = np.ascontiguousarray(rgb, dtype=np.float32)
    out = cv2.transform(x, m, dst=scratch(work, "ccm", x.shape)).reshape(x.shape)
    np.clip(out, 0.0, 1.0, out=out)
    return out
