"""Differentiable versions of the standard ISP blocks, matching hil_tune.isp numerically.

They take the *decoded* parameter values as tensors, one per sample, so gradients reach every
value. Borders, kernels and clipping follow the NumPy/OpenCV blocks: Malvar's kernels with
mirrored borders (OpenCV's BORDER_REFLECT_101), the unsharp mask's Gaussian with the edge sample
repeated (BORDER_REFLECT) and radius int(4 sigma + 0.5), a saturating colour matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom
from torch import Tensor

from hil_tune.isp.demosaic import FILTERS
from hil_tune.raw import CFA_PATTERNS

CFAS = tuple(CFA_PATTERNS)


def site_masks(cfa: Tensor, h: int, w: int) -> Tensor:
    """(B,) CFA indices into CFAS -> (B, 4, H, W) float masks of R, Gr (green in a red row), Gb, B sites."""
    tiles = torch.zeros(len(CFAS), 4, 2, 2)
    for k, pattern in enumerate(CFAS):
        for r in range(2):
            for c in range(2):
                colour = pattern[r * 2 + c]
                row_has_red = "R" in pattern[r * 2 : r * 2 + 2]
                site = {"R": 0, "B": 3}.get(colour, 1 if row_has_red else 2)
                tiles[k, site, r, c] = 1.0
    tiles = tiles.to(cfa.device)[cfa]  # (B, 4, 2, 2)
    return tiles.repeat(1, 1, h // 2, w // 2)


def demosaic(mosaic: Tensor, masks: Tensor, method: str = "malvar2004") -> Tensor:
    """(B, 1, H, W) mosaic and its site masks -> (B, 3, H, W) linear RGB clipped to [0, 1]."""
    kernels = torch.tensor(np.stack(FILTERS[method]), dtype=mosaic.dtype, device=mosaic.device)[:, None]
    pad = kernels.shape[-1] // 2
    g_at_rb, x_row, x_col, x_opp = F.conv2d(F.pad(mosaic, (pad,) * 4, mode="reflect"), kernels).unbind(1)
    m = mosaic[:, 0]
    r_, gr, gb, b_ = masks.unbind(1)
    red = r_ * m + b_ * x_opp + gr * x_row + gb * x_col
    green = (r_ + b_) * g_at_rb + (gr + gb) * m
    blue = b_ * m + r_ * x_opp + gb * x_row + gr * x_col
    return torch.stack([red, green, blue], 1).clamp(0, 1)


def white_balance(mosaic: Tensor, masks: Tensor, gains: Tensor, digital_gain: Tensor) -> Tensor:
    """gains (B, 3) for R, G, B; digital_gain (B,). Clipped like the ISP's fixed-point gain stage."""
    per_site = torch.stack([gains[:, 0], gains[:, 1], gains[:, 1], gains[:, 2]], 1)  # R, Gr, Gb, B
    gain_map = (masks * per_site[:, :, None, None]).sum(1, keepdim=True) * digital_gain[:, None, None, None]
    return (mosaic * gain_map).clamp(0, 1)


def color_matrix(rgb: Tensor, matrix: Tensor) -> Tensor:
    """matrix (B, 3, 3), rows = output channels."""
    return torch.einsum("bij,bjhw->bihw", matrix, rgb).clamp(0, 1)


def _symmetric_index(n: int, pad: int, device: torch.device) -> Tensor:
    idx = np.pad(np.arange(n), pad, mode="symmetric")
    return torch.as_tensor(idx, device=device)


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian with a per-sample sigma (B,), truncated at `radius`, edge-repeating borders."""
    h, w = x.shape[-2:]
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    # The ISP truncates at int(4 sigma + 0.5); weights beyond that are below e^-8 of the peak.
    cut = (taps.abs()[None] <= torch.floor(4 * sigma[:, None] + 0.5).clamp(min=1)).to(x.dtype)
    k = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2) * cut
    k = k / k.sum(1, keepdim=True)  # (B, K)
    xi = x.index_select(3, _symmetric_index(w, radius, x.device))  # (B, C, H, W + 2r)
    cols = xi.unfold(3, 2 * radius + 1, 1)  # (B, C, H, W, K)
    x = torch.einsum("bchwk,bk->bchw", cols, k)
    xi = x.index_select(2, _symmetric_index(h, radius, x.device))
    rows = xi.unfold(2, 2 * radius + 1, 1)  # (B, C, H, W, K)
    return torch.einsum("bchwk,bk->bchw", rows, k)


def unsharp_mask(rgb: Tensor, amount: Tensor, sigma: Tensor, radius: int) -> Tensor:
    blur = gaussian_blur(rgb, sigma, radius)
    return (rgb + amount[:, None, None, None] * (rgb - blur)).clamp(0, 1)


def tone(rgb: Tensor, curve: str, gamma: float) -> Tensor:
    x = rgb.clamp(0, 1)
    if curve == "srgb":
        lo = 12.92 * x
        hi = 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
        return torch.where(x <= 0.0031308, lo, hi)
    if curve == "gamma":
        return x.clamp(min=1e-6) ** (1 / gamma)
    return x


def chroma_subsample(rgb: Tensor, subsampling: str) -> Tensor:
    """What JPEG's chroma subsampling does to a display image: YCbCr (JFIF), chroma averaged over
    2x2 (4:2:0) or 2x1 (4:2:2) blocks, brought back up with a triangle filter as libjpeg's fancy
    upsampling does. The DCT quantisation noise is left to the residual network."""
    if subsampling == "4:4:4":
        return rgb
    r, g, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    chroma = torch.stack([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b], 1)
    pool = (2, 2) if subsampling == "4:2:0" else (1, 2)
    small = F.avg_pool2d(chroma, pool, ceil_mode=True)
    cb, cr = F.interpolate(small, size=rgb.shape[-2:], mode="bilinear", align_corners=False).unbind(1)
    return torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1).clamp(0, 1)


def box_mean(x: Tensor, radius: int) -> Tensor:
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="reflect"), 2 * radius + 1, stride=1)


def guided_denoise(mosaic: Tensor, eps: Tensor, radius: int = 2) -> Tensor:
    """Self-guided filter (He et al.) on each Bayer plane: a differentiable, edge-preserving
    stand-in for the device's denoiser whose strength `eps` (B,) is a noise variance. eps = 0 is
    the identity, as filter-strength 0 is in the ISP."""
    planes = F.pixel_unshuffle(mosaic, 2)  # (B, 4, H/2, W/2): one plane per 2x2 site
    mean = box_mean(planes, radius)
    var = (box_mean(planes * planes, radius) - mean * mean).clamp(min=0)
    a = var / (var + eps[:, None, None, None] + 1e-12)
    b = mean - a * mean
    return F.pixel_shuffle(box_mean(a, radius) * planes + box_mean(b, radius), 2)
