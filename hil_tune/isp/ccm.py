"""3x3 colour space transform from camera RGB to linear sRGB."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def ccm_from_params(params: Mapping[str, float | str]) -> np.ndarray:
    """The matrix M (rows = output channels) from the ccmIJ parameters."""
    return np.array([[float(params[f"ccm{i}{j}"]) for j in range(3)] for i in range(3)], dtype=np.float32)


def color_matrix(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Planar (3, H, W): out[i] = sum_j M[i, j] * rgb[j], clipped to [0, 1] (a fixed-point pipeline saturates)."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.shape != (3, 3):
        raise ValueError(f"colour matrix must be 3x3, got {m.shape}")
    flat = rgb.reshape(3, -1).astype(np.float32, copy=False)
    out = m @ flat
    np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(rgb.shape)
