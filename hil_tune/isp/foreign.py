"""`foreign` firmware: an ISP with the same 20 knobs built differently, standing in for an unknown
hardware ISP when measuring how well a proxy follows a device whose structure it does not know.

Differences from the synthetic ISP, block by block:
- noise reduction: OpenCV's bilateral filter on each Bayer plane (not BM3D);
- demosaic: OpenCV's edge-aware demosaicing (not Malvar);
- colour order: the 3x3 matrix acts on camera RGB first, white-balance gains after it;
- sharpening: unsharp mask of luminance only;
- tone: a filmic curve (Narkowicz's ACES fit) then display gamma 1/2.2 (not sRGB);
- compression: the same JPEG settings.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from hil_tune.isp.ccm import ccm_from_params
from hil_tune.isp.denoise import check_size
from hil_tune.isp.jpeg import JFIF_YCBCR, jpeg_roundtrip
from hil_tune.isp.pipeline import IspStages, SyntheticISP
from hil_tune.isp.sharpen import blur_radius
from hil_tune.params import ParamDict
from hil_tune.raw import RawFrame, pack4, unpack4

_OPENCV_BAYER = {"RGGB": cv2.COLOR_BayerBG2RGB_EA, "BGGR": cv2.COLOR_BayerRG2RGB_EA,
                 "GRBG": cv2.COLOR_BayerGB2RGB_EA, "GBRG": cv2.COLOR_BayerGR2RGB_EA}  # fmt: skip


def filmic(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    y = (x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)
    return np.clip(y, 0.0, 1.0) ** (1 / 2.2)


# JFIF's YCbCr as float32 matrices: the firmwares that work in YCbCr (handset, studio) share them.
TO_YCC = np.asarray(JFIF_YCBCR, dtype=np.float32)
FROM_YCC = np.linalg.inv(TO_YCC).astype(np.float32)


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """OpenCV's Gaussian blur truncated where the synthetic ISP's is (int(4 sigma + 0.5)), edges repeated."""
    r = blur_radius(sigma)
    return cv2.GaussianBlur(x, (2 * r + 1,) * 2, sigma, borderType=cv2.BORDER_REFLECT)


class ForeignISP(SyntheticISP):
    """Same profile and parameters as the synthetic ISP, different blocks (see the module doc).

    Each block is a method, so a measurement can swap one for the synthetic ISP's and see what the
    difference costs (benchmarks/foreign_budget.py)."""

    def denoise(self, m: np.ndarray, cfa: str, p: ParamDict) -> np.ndarray:
        strength = float(p["filter-strength"])
        if strength <= 0:
            return m
        sigma = float(np.sqrt(float(p["noise-var"]) * self.settings.noise_var_scale))
        planes = pack4(m, cfa)
        out = np.stack(
            [cv2.bilateralFilter(np.ascontiguousarray(planes[..., c]), 5, 3 * strength * sigma, 1 + strength)
             for c in range(4)], axis=-1,
        )  # fmt: skip
        return unpack4(out, cfa)

    NAME = "foreign"
    BAYER = _OPENCV_BAYER  # OpenCV's demosaic codes by CFA: the edge-aware method

    def demosaic(self, m: np.ndarray, cfa: str) -> np.ndarray:
        codes = np.clip(m * 65535 + 0.5, 0, 65535).astype(np.uint16)
        return cv2.demosaicing(codes, self.BAYER[cfa]).astype(np.float32) / 65535  # (H, W, 3)

    @staticmethod
    def gains(p: ParamDict) -> np.ndarray:
        """The white-balance gains times the digital gain, per RGB channel."""
        return np.array([p["gain-r"], p["gain-g"], p["gain-b"]], dtype=np.float32) * float(p["digital-gain"])

    def colour(self, rgb: np.ndarray, p: ParamDict) -> np.ndarray:
        rgb = np.clip(rgb @ ccm_from_params(p).T, 0, 1)  # camera-space matrix first
        return np.clip(rgb * self.gains(p), 0, 1)

    def sharpen(self, rgb: np.ndarray, p: ParamDict) -> np.ndarray:
        luma = rgb @ np.array(JFIF_YCBCR[0], dtype=np.float32)
        blur = gaussian(luma, float(p["usm-sigma"]))
        return np.clip(rgb + float(p["usm-amount"]) * (luma - blur)[..., None], 0, 1)

    def tone(self, rgb: np.ndarray) -> np.ndarray:
        return (filmic(rgb) * 255 + 0.5).astype(np.uint8)

    def compress(self, toned: np.ndarray) -> np.ndarray:
        return jpeg_roundtrip(toned, quality=self.settings.jpeg_quality, subsampling=self.settings.jpeg_subsampling)

    def run(self, mosaic: np.ndarray, cfa: str, params: Mapping[str, object] | None = None) -> np.ndarray:
        check_size(*mosaic.shape[:2], "mosaic")
        p, _ = self.resolve(params)
        m = self.denoise(np.ascontiguousarray(mosaic, dtype=np.float32), cfa, p)
        rgb = self.sharpen(self.colour(self.demosaic(m, cfa), p), p)
        return self.compress(self.tone(rgb))

    def stages(self, *args: object, **kwargs: object) -> IspStages:
        raise NotImplementedError(f"the {self.NAME} firmware does not report the synthetic ISP's stages")

    def run_frame(self, frame: RawFrame, params: Mapping[str, object] | None = None) -> np.ndarray:
        return self.run(frame.normalized(), frame.cfa, params)
