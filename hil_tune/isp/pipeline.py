"""The synthetic ISP: the blocks in the paper's order, driven by a profile and a parameter dict.

Parameters are validated and snapped to the profile's grid before any block runs, so the ISP can
only ever see values a device could accept: what the sweep records is exactly what was rendered.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hil_tune.errors import ProfileError
from hil_tune.isp.blocks import REQUIRED_PARAMS
from hil_tune.isp.ccm import ccm_from_params, color_matrix
from hil_tune.isp.demosaic import demosaic
from hil_tune.isp.denoise import check_size, denoise_mosaic
from hil_tune.isp.jpeg import jpeg_roundtrip
from hil_tune.isp.sharpen import unsharp_mask
from hil_tune.isp.tone import tone_uint8
from hil_tune.isp.white_balance import white_balance
from hil_tune.isp.workspace import thread_workspace
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame


@dataclass
class IspStages:
    """Intermediate images of one run (for inspection and the benchmark) and per-block wall time.

    Mosaics are (H, W) float32, RGB stages interleaved (H, W, 3) float32 in linear light (OpenCV's
    layout, which its multi-channel calls run fastest on); `toned` is the display-encoded 8-bit image
    (H, W, 3) before compression and `output` the decoded JPEG.
    """

    denoised: np.ndarray
    balanced: np.ndarray
    rgb: np.ndarray
    corrected: np.ndarray
    sharpened: np.ndarray
    toned: np.ndarray
    output: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


class SyntheticISP:
    """Runs a RAW mosaic through the synthetic ISP of a profile that declares its 20 parameters."""

    def __init__(self, profile: Profile) -> None:
        missing = [n for n in REQUIRED_PARAMS if n not in profile.space]
        if missing:
            raise ProfileError(profile.name, [f"the synthetic ISP needs parameter(s) {', '.join(missing)}"])
        self.profile = profile
        self.space = profile.space
        self.settings = profile.pipeline

    def camera_params(self, frame: RawFrame) -> ParamDict:
        """Parameters that undo what the camera (or unprocessing) did: as-shot WB and colour matrix.

        For an unprocessed frame these are the exact inverse draws; for a camera file, LibRaw's
        as-shot white balance and camera-to-sRGB matrix. Clipped into range and snapped to the grid.
        """
        wanted: dict[str, float] = {}
        if "ideal_params" in frame.meta:
            wanted.update(frame.meta["ideal_params"])
        else:
            if frame.as_shot_wb is not None:
                wanted.update({"gain-r": frame.as_shot_wb[0], "gain-g": 1.0, "gain-b": frame.as_shot_wb[2]})
            if frame.rgb_cam is not None:
                wanted.update({f"ccm{i}{j}": float(frame.rgb_cam[i, j]) for i in range(3) for j in range(3)})
        out = self.space.defaults()
        for name, value in wanted.items():
            spec = self.space[name]
            assert spec.min is not None and spec.max is not None
            out[name] = spec.quantize(min(max(float(value), spec.min), spec.max))[0]
        return out

    def resolve(self, params: Mapping[str, object] | None) -> tuple[ParamDict, list[str]]:
        """Defaults overlaid with `params`, validated and quantized; returns (values, warnings)."""
        return self.space.validate(params or {})

    def stages(
        self, mosaic: np.ndarray, cfa: str, params: Mapping[str, object] | None = None, *, scratch: bool = False
    ) -> IspStages:
        """Run every block on a normalised (H, W) mosaic and keep each intermediate (fresh arrays).

        With `scratch=True` the intermediates are this thread's reused scratch arrays, as `run`
        renders them, valid only until the next call in this thread (the output is always new).
        """
        check_size(*mosaic.shape[:2], "mosaic")
        work = thread_workspace() if scratch else None
        p, _ = self.resolve(params)
        s = self.settings
        seconds: dict[str, float] = {}
        t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            seconds[name] = now - t
            t = now

        denoised = denoise_mosaic(
            mosaic,
            cfa,
            filter_strength=float(p["filter-strength"]),
            noise_type=str(p["noise-type"]),
            noise_var=float(p["noise-var"]),
            lambda_thr3d=float(p["lambda-thr3d"]),
            mu2=float(p["mu2"]),
            noise_var_scale=s.noise_var_scale,
            base_profile=s.bm3d_profile,
            threads=s.bm3d_threads,
        )
        lap("denoise")
        balanced = white_balance(
            denoised,
            cfa,
            gain_r=float(p["gain-r"]),
            gain_g=float(p["gain-g"]),
            gain_b=float(p["gain-b"]),
            digital_gain=float(p["digital-gain"]),
            work=work,
        )
        lap("white_balance")
        rgb = demosaic(balanced, cfa, s.demosaic, work=work)
        lap("demosaic")
        corrected = color_matrix(rgb, ccm_from_params(p), work=work)
        lap("ccm")
        sharpened = unsharp_mask(corrected, amount=float(p["usm-amount"]), sigma=float(p["usm-sigma"]), work=work)
        lap("sharpen")
        toned = tone_uint8(sharpened, curve=s.tone, gamma=s.gamma, work=work)
        lap("tone")
        output = jpeg_roundtrip(toned, quality=s.jpeg_quality, subsampling=s.jpeg_subsampling)
        lap("jpeg")
        return IspStages(denoised, balanced, rgb, corrected, sharpened, toned, output, seconds)

    def run(self, mosaic: np.ndarray, cfa: str, params: Mapping[str, object] | None = None) -> np.ndarray:
        """Normalised (H, W) mosaic -> uint8 (H, W, 3) sRGB output (a new array; the rest is scratch)."""
        return self.stages(mosaic, cfa, params, scratch=True).output

    def run_frame(self, frame: RawFrame, params: Mapping[str, object] | None = None) -> np.ndarray:
        return self.run(frame.normalized(), frame.cfa, params)

    def run_batch(
        self, mosaics: np.ndarray, cfa: str, params: Sequence[Mapping[str, object]] | Mapping[str, object]
    ) -> np.ndarray:
        """(N, H, W) mosaics with one parameter dict each (or one for all) -> (N, H, W, 3) uint8.

        Each image is rendered on its own: bm3d is a per-image call anyway, and it keeps a batch
        bit-identical to single calls, which resumable sweeps rely on.
        """
        if mosaics.ndim != 3:
            raise ValueError(f"expected (N, H, W) mosaics, got shape {mosaics.shape}")
        per_image = [params] * len(mosaics) if isinstance(params, Mapping) else list(params)
        if len(per_image) != len(mosaics):
            raise ValueError(f"{len(mosaics)} mosaics but {len(per_image)} parameter sets")
        return np.stack([self.run(m, cfa, p) for m, p in zip(mosaics, per_image, strict=True)])
