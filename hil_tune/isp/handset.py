"""`handset` firmware: a third ISP on the same 20 knobs, laid out the way phone ISPs commonly are
rather than like either other firmware. It exists to check a proxy recipe on a device it was not
developed against: the grey-box's learnt blocks were built while measuring `synthetic` and
`foreign`, so only a third, differently built device says whether they learn structure or copy it.

Block by block (each one unlike both other firmwares):
- demosaic first, on the raw mosaic: OpenCV's bilinear demosaic; no denoising of the mosaic;
- white-balance gains, then the colour matrix, with a soft highlight knee instead of a hard clip;
- noise reduction after demosaic, in YCbCr: non-local means on luma (strength and noise variance
  set its h) and a Gaussian on chroma whose width `mu2` scales (phones smooth chroma harder);
- sharpening: a difference of Gaussians (sigma, 2 sigma) added to luma;
- tone: the Rec. 709 transfer curve, then a mild S-curve;
- the same JPEG.
The noise-type and lambda-thr3d knobs reach nothing here, as a device's knobs need not all map.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from hil_tune.isp.ccm import ccm_from_params
from hil_tune.isp.denoise import check_size
from hil_tune.isp.foreign import FROM_YCC, TO_YCC, ForeignISP, gaussian
from hil_tune.params import ParamDict

_OPENCV_BILINEAR = {"RGGB": cv2.COLOR_BayerBG2RGB, "BGGR": cv2.COLOR_BayerRG2RGB,
                    "GRBG": cv2.COLOR_BayerGB2RGB, "GBRG": cv2.COLOR_BayerGR2RGB}  # fmt: skip
KNEE = 0.8  # where highlights start to roll off towards 1


def soft_clip(x: np.ndarray) -> np.ndarray:
    """Identity below KNEE, then an exponential shoulder that reaches 1 only at infinity."""
    x = np.clip(x, 0.0, None)
    room = 1.0 - KNEE
    over = np.maximum(x - KNEE, 0.0)
    return np.where(x <= KNEE, x, KNEE + room * (1.0 - np.exp(-over / room))).astype(np.float32)


def rec709(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x < 0.018, 4.5 * x, 1.099 * np.power(x, 0.45) - 0.099).astype(np.float32)


def s_curve(y: np.ndarray, strength: float = 0.25) -> np.ndarray:
    return ((1 - strength) * y + strength * y * y * (3 - 2 * y)).astype(np.float32)


class HandsetISP(ForeignISP):
    """Same profile and parameters as the synthetic ISP, a phone-like block layout (module doc).
    From the foreign firmware it takes only the plumbing: OpenCV's demosaic (here its bilinear
    method), the JPEG, and frame handling; `run` orders its own blocks."""

    NAME = "handset"
    BAYER = _OPENCV_BILINEAR

    def colour(self, rgb: np.ndarray, p: ParamDict) -> np.ndarray:
        return soft_clip(soft_clip(rgb * self.gains(p)) @ ccm_from_params(p).T)

    def denoise_ycc(self, rgb: np.ndarray, p: ParamDict) -> tuple[np.ndarray, np.ndarray]:
        """(luma, chroma) of the colour-corrected image, denoised as the knobs ask."""
        ycc = rgb @ TO_YCC.T
        luma, chroma = ycc[..., 0], ycc[..., 1:]
        strength = float(p["filter-strength"])
        if strength <= 0:
            return luma, chroma
        sigma = float(np.sqrt(float(p["noise-var"]) * self.settings.noise_var_scale))
        codes = np.clip(luma * 65535 + 0.5, 0, 65535).astype(np.uint16)
        h = [float(65535 * 1.5 * strength * sigma)]
        luma = cv2.fastNlMeansDenoising(codes, h=h, templateWindowSize=5, searchWindowSize=11,
                                        normType=cv2.NORM_L1).astype(np.float32) / 65535  # fmt: skip
        chroma = gaussian(np.ascontiguousarray(chroma), 0.3 + strength * (0.3 + 0.3 * float(p["mu2"])))
        return luma, chroma

    def sharpen(self, luma: np.ndarray, p: ParamDict) -> np.ndarray:
        sigma = float(p["usm-sigma"])
        detail = gaussian(luma, sigma) - gaussian(luma, 2 * sigma)
        return luma + float(p["usm-amount"]) * 2.0 * detail

    def tone(self, rgb: np.ndarray) -> np.ndarray:
        return (s_curve(rec709(rgb)) * 255 + 0.5).astype(np.uint8)

    def run(self, mosaic: np.ndarray, cfa: str, params: Mapping[str, object] | None = None) -> np.ndarray:
        check_size(*mosaic.shape[:2], "mosaic")
        p, _ = self.resolve(params)
        rgb = self.colour(self.demosaic(np.ascontiguousarray(mosaic, dtype=np.float32), cfa), p)
        luma, chroma = self.denoise_ycc(rgb, p)
        ycc = np.concatenate([self.sharpen(luma, p)[..., None], chroma], -1)
        return self.compress(self.tone(ycc @ FROM_YCC.T))
