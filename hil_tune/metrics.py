"""Image fidelity in one place: PSNR of images in [0, peak], for arrays and for torch batches.

Why: the proxy's training curve, its evaluation report and the predictor's table must mean the
same thing by "dB"; three private copies had already drifted in how they floored the error.
"""

from __future__ import annotations

import numpy as np
import torch

MSE_FLOOR = 1e-10  # identical images read as 100 dB, not infinity


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of two images of the same shape, values in [0, peak]."""
    mse = float(np.mean((np.asarray(a, np.float64) / peak - np.asarray(b, np.float64) / peak) ** 2))
    return float(10 * np.log10(1 / max(mse, MSE_FLOOR)))


def psnr_batch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of (B, ...) images in [0, 1] (prediction clipped, as a device's is)."""
    mse = ((pred.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=MSE_FLOOR))
