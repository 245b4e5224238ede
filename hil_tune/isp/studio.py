"""`studio` firmware: a fourth ISP on the same 20 knobs, laid out the way camera bodies often are.
Like `handset`, it exists to check the proxy recipe on a device it was not developed against.

Block by block (each one unlike the three other firmwares):
- lens shading left in the picture: each colour falls off as (1 + k r^2)^-2 towards the frame's
  corners (to 0.67 of red, 0.74 of green, 0.80 of blue);
- noise reduction by coring on each Bayer plane: the detail above a Gaussian base is
  soft-thresholded; strength and noise variance set the threshold, lambda-thr3d scales it and
  strength widens the base;
- demosaic: OpenCV's edge-aware method (as `foreign`); gains, then the colour matrix;
- tone: an extended Reinhard curve normalised to reach white, then display gamma 1/2.4;
- after the tone curve, in display space: a fixed saturation boost (x1.2 in YCbCr) and unsharp
  masking of luma, so sharpening acts on gamma-encoded values as many camera ISPs do it;
- the same JPEG.
The noise-type and mu2 knobs reach nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hil_tune.isp.ccm import ccm_from_params
from hil_tune.isp.denoise import check_size
from hil_tune.isp.foreign import FROM_YCC, TO_YCC, ForeignISP, gaussian
from hil_tune.params import ParamDict
from hil_tune.raw import pack4, unpack4

FALLOFF = {"R": 0.22, "G": 0.16, "B": 0.12}  # k of (1 + k r^2)^-2, r = 1 at the corners
WHITE = 1.2  # the extended Reinhard curve's white point, before normalising it to reach 1
SATURATION = 1.2


def radius2(h: int, w: int) -> np.ndarray:
    """Squared distance of each pixel's centre from the frame's, over the half-diagonal's."""
    y = np.arange(h, dtype=np.float32) + 0.5 - h / 2
    x = np.arange(w, dtype=np.float32) + 0.5 - w / 2
    return (y[:, None] ** 2 + x[None, :] ** 2) / np.float32((h / 2) ** 2 + (w / 2) ** 2)


def shading(h: int, w: int, cfa: str) -> np.ndarray:
    """(h, w) gain of each mosaic site: its colour's falloff at its radius."""
    k = np.array([FALLOFF[c] for c in cfa], dtype=np.float32).reshape(2, 2)  # cfa: 'RGGB' etc.
    return (1 + np.tile(k, (h // 2, w // 2)) * radius2(h, w)) ** -2


def reinhard(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    y = x * (1 + x / WHITE**2) / (1 + x)
    return (y / (1 + 1 / WHITE**2) * 2) ** (1 / 2.4)


class StudioISP(ForeignISP):
    """Same profile and parameters as the synthetic ISP, a camera-body block layout (module doc).
    From the foreign firmware it takes OpenCV's edge-aware demosaic, the JPEG and frame handling."""

    NAME = "studio"

    def denoise(self, m: np.ndarray, cfa: str, p: ParamDict) -> np.ndarray:
        strength = float(p["filter-strength"])
        if strength <= 0:
            return m
        sigma = float(np.sqrt(float(p["noise-var"]) * self.settings.noise_var_scale))
        threshold = strength * sigma * (0.5 + 0.1 * float(p["lambda-thr3d"]))
        planes = pack4(m, cfa)
        base = gaussian(np.ascontiguousarray(planes), 0.8 + 0.6 * strength)
        detail = planes - base
        cored = np.sign(detail) * np.maximum(np.abs(detail) - threshold, 0.0)
        return unpack4((base + cored).astype(np.float32), cfa)

    def colour(self, rgb: np.ndarray, p: ParamDict) -> np.ndarray:
        return np.clip(np.clip(rgb * self.gains(p), 0, 1) @ ccm_from_params(p).T, 0, 1)

    def display(self, rgb: np.ndarray, p: ParamDict) -> np.ndarray:
        """Tone, then saturation and luma sharpening on the display-encoded image -> uint8."""
        ycc = reinhard(rgb).astype(np.float32) @ TO_YCC.T
        luma = ycc[..., 0]
        luma = luma + float(p["usm-amount"]) * (luma - gaussian(np.ascontiguousarray(luma), float(p["usm-sigma"])))
        ycc = np.concatenate([luma[..., None], SATURATION * ycc[..., 1:]], -1)
        return (np.clip(ycc @ FROM_YCC.T, 0, 1) * 255 + 0.5).astype(np.uint8)

    def run(self, mosaic: np.ndarray, cfa: str, params: Mapping[str, object] | None = None) -> np.ndarray:
        check_size(*mosaic.shape[:2], "mosaic")
        p, _ = self.resolve(params)
        m = np.ascontiguousarray(mosaic, dtype=np.float32) * shading(*mosaic.shape[:2], cfa)
        rgb = self.colour(self.demosaic(self.denoise(m, cfa, p), cfa), p)
        return self.compress(self.display(rgb, p))
