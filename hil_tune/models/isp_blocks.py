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
from hil_tune.isp.jpeg import JFIF_RGB_FROM_CHROMA, JFIF_YCBCR
from hil_tune.isp.sharpen import BLUR_TRUNCATE
from hil_tune.raw import CFA_PATTERNS, PACK4_ORDER, site_names

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


def colour_masks(masks: Tensor) -> Tensor:
    """(B, 4, H, W) site masks (R, Gr, Gb, B) -> (B, 3, H, W) masks of the R, G and B sites."""
    return torch.cat([masks[:, :1], masks[:, 1:2] + masks[:, 2:3], masks[:, 3:]], 1)


def demosaic(mosaic: Tensor, masks: Tensor, method: str = "malvar2004") -> Tensor:
    """(B, 1, H, W) mosaic and its site masks -> (B, 3, H, W) linear RGB clipped to [0, 1]."""
    kernels = torch.tensor(np.stack(FILTERS[method]), dtype=mosaic.dtype, device=mosaic.device)[:, None]
    pad = kernels.shape[-1] // 2
    estimates = F.conv2d(F.pad(mosaic, (pad,) * 4, mode="reflect"), kernels).unbind(1)
    return assemble(mosaic, masks, *estimates).clamp(0, 1)


def assemble(mosaic: Tensor, masks: Tensor, g_at_rb: Tensor, x_row: Tensor, x_col: Tensor, x_opp: Tensor) -> Tensor:
    """RGB from a mosaic and the (B, H, W) estimates of a demosaic's four site filters: green at red
    and blue sites, the other colour in a green site's row, in its column, and at the opposite
    colour's site. Unclamped: a learnt demosaic blends these before it clips."""
    m = mosaic[:, 0]
    r_, gr, gb, b_ = masks.unbind(1)
    red = r_ * m + b_ * x_opp + gr * x_row + gb * x_col
    green = (r_ + b_) * g_at_rb + (gr + gb) * m
    blue = b_ * m + r_ * x_opp + gb * x_row + gr * x_col
    return torch.stack([red, green, blue], 1)


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
    """Separable Gaussian with a per-sample sigma (B,), truncated at `radius`, edge-repeating borders.

    Each sample's kernel is its own group of one grouped convolution: 5x faster than unfolding
    the (B, C, H, W, 2r + 1) windows, at the 81 taps the largest sigma of the profile needs."""
    b, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    # The ISP truncates at int(4 sigma + 0.5); weights beyond that are below e^-8 of the peak.
    cut = (taps.abs()[None] <= torch.floor(BLUR_TRUNCATE * sigma[:, None] + 0.5).clamp(min=1)).to(x.dtype)
    k = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2) * cut
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B * C, K)
    flat = x.reshape(1, b * c, h, w)
    flat = flat.index_select(3, _symmetric_index(w, radius, x.device))
    flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
    flat = flat.index_select(2, _symmetric_index(h, radius, x.device))
    flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


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


# libjpeg's base quantisation tables (ITU T.81 Annex K), natural (row-major) order.
_LUMA_Q = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_Q = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32  # fmt: skip
_SUBSAMPLING = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2)}


def quant_table(base: tuple[int, ...], quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling with baseline clamping, as Pillow's `quality=` sets it."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((np.asarray(base) * scale + 50) // 100, 1, 255).reshape(8, 8)


def dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II (rows are basis functions): JPEG's, and BM3D's Wiener stage's."""
    k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    c = np.cos(np.pi * (2 * n + 1) * k / 16) * np.sqrt(2 / 8)
    c[0] /= np.sqrt(2)
    return c


def straight_round(x: Tensor) -> Tensor:
    """Rounds in the forward pass, passes the gradient through unchanged (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _quantise_blocks(plane: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """(B, H, W) level-shifted samples, H and W multiples of 8 -> the same after DCT quantisation."""
    b, h, w = plane.shape
    blk = plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)
    coef = straight_round(dct @ blk @ dct.T / table) * table
    return (dct.T @ coef @ dct).transpose(2, 3).reshape(b, h, w)


def jpeg(rgb: Tensor, quality: int, subsampling: str = "4:2:0") -> Tensor:
    """A JPEG round trip as libjpeg does it (8-bit samples, JFIF YCbCr, chroma box-averaged,
    8x8 DCT quantised with the quality-scaled standard tables, chroma brought back with the
    triangle filter of libjpeg's fancy upsampling), differentiable by straight-through rounding.

    Why it is worth modelling exactly: on small noisy patches the DCT quantisation moves pixels by
    more than any other block (34 dB between the image before and after JPEG on the benchmark
    sweep), and it is a fixed function of the image. Given the ISP's exact pre-JPEG image this
    matches Pillow + libjpeg-turbo to about 46 dB; the rest is libjpeg's fixed-point arithmetic.
    Edges are padded by repetition to whole blocks (libjpeg pads each downsampled component; the
    two differ only in the padding, so only on frames that are not a multiple of 16).
    """
    if quality <= 0:
        return straight_round(rgb.clamp(0, 1) * 255) / 255
    sy, sx = _SUBSAMPLING[subsampling]
    h, w = rgb.shape[-2:]
    x = straight_round(rgb.clamp(0, 1) * 255)
    x = F.pad(x, (0, -w % (8 * sx), 0, -h % (8 * sy)), mode="replicate")
    r, g, b = x.unbind(1)
    y, chroma = _to_ycbcr(r, g, b)
    dct = torch.as_tensor(dct_matrix(), dtype=rgb.dtype, device=rgb.device)
    luma_q = torch.as_tensor(quant_table(_LUMA_Q, quality), dtype=rgb.dtype, device=rgb.device)
    chroma_q = torch.as_tensor(quant_table(_CHROMA_Q, quality), dtype=rgb.dtype, device=rgb.device)
    y = _quantise_blocks(straight_round(y) - 128, luma_q, dct) + 128
    chroma = straight_round(chroma)
    small = F.avg_pool2d(chroma, (sy, sx)) if (sy, sx) != (1, 1) else chroma
    small = straight_round(small)
    n = small.shape[0]
    small = _quantise_blocks(small.flatten(0, 1), chroma_q, dct).unflatten(0, (n, 2))
    if (sy, sx) != (1, 1):
        small = F.interpolate(small, scale_factor=(sy, sx), mode="bilinear", align_corners=False)
    cb, cr = small.unbind(1)
    y = y.clamp(0, 255)
    out = _from_ycbcr(y, cb, cr)
    return (out[..., :h, :w] / 255).clamp(0, 1)


def _to_ycbcr(r: Tensor, g: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(Y, stacked Cb Cr) by JFIF's formula (hil_tune.isp.jpeg.JFIF_YCBCR)."""
    (yr, yg, yb), (br, bg, bb), (rr, rg, rb) = JFIF_YCBCR
    return yr * r + yg * g + yb * b, torch.stack([br * r + bg * g + bb * b, rr * r + rg * g + rb * b], 1)


def _from_ycbcr(y: Tensor, cb: Tensor, cr: Tensor) -> Tensor:
    (_, r_cr), (g_cb, g_cr), (b_cb, _) = JFIF_RGB_FROM_CHROMA
    return torch.stack([y + r_cr * cr, y + g_cb * cb + g_cr * cr, y + b_cb * cb], 1)


def chroma_subsample(rgb: Tensor, subsampling: str) -> Tensor:
    """What JPEG's chroma subsampling does to a display image: YCbCr (JFIF), chroma averaged over
    2x2 (4:2:0) or 2x1 (4:2:2) blocks, brought back up with a triangle filter as libjpeg's fancy
    upsampling does. The DCT quantisation noise is left to the residual network."""
    if subsampling == "4:4:4":
        return rgb
    r, g, b = rgb.unbind(1)
    y, chroma = _to_ycbcr(r, g, b)
    pool = (2, 2) if subsampling == "4:2:0" else (1, 2)
    small = F.avg_pool2d(chroma, pool, ceil_mode=True)
    cb, cr = F.interpolate(small, size=rgb.shape[-2:], mode="bilinear", align_corners=False).unbind(1)
    return _from_ycbcr(y, cb, cr).clamp(0, 1)


def _pack_order() -> Tensor:
    """(CFA, plane) -> 2x2 phase (row-major) holding raw.PACK4_ORDER's plane for that CFA."""
    order = [[site_names(p).index(name) for name in PACK4_ORDER] for p in CFAS]
    return torch.tensor(order)


def pack4(mosaic: Tensor, cfa: Tensor) -> Tensor:
    """(B, 1, H, W) mosaic -> (B, 4, H/2, W/2) planes in raw.pack4's R, Gr, Gb, B order, per sample CFA."""
    phases = F.pixel_unshuffle(mosaic, 2)
    order = _pack_order().to(cfa.device)[cfa]  # (B, 4)
    return phases.gather(1, order[:, :, None, None].expand(-1, -1, *phases.shape[-2:]))


def unpack4(planes: Tensor, cfa: Tensor) -> Tensor:
    """Inverse of pack4."""
    order = _pack_order().to(cfa.device)[cfa].argsort(1)
    return F.pixel_shuffle(planes.gather(1, order[:, :, None, None].expand(-1, -1, *planes.shape[-2:])), 2)
