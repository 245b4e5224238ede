"""Noise reduction with the `bm3d` package, on the Bayer mosaic.

Where it runs: first in the pipeline, on the mosaic packed into four half-resolution planes
(R, Gr, Gb, B) and denoised in *one* multichannel bm3d call (block matching on the first plane,
filtering on all four). That is the paper's block order, it touches each sensor sample once, and it is
the whole cost of the pipeline: bm3d takes seconds per 512x512 plane here, so it is never run twice.

What the paper's parameters mean here:
- noise-type picks one of the correlated-noise kernels of the bm3d package's example experiments
  (gw/g0 white, g1 horizontal line, g2 circular, g3 diagonal, g4 pink; a trailing w adds a white part);
- noise-var scales that kernel's PSD to a variance of noise_var * noise_var_scale (profile setting) of
  the [0, 1]-normalised signal;
- filter-strength, lambda-thr3d and mu2 are the package's own BM3DProfile knobs. Both lambda_thr3d and
  mu2 are always set: leaving either unset with a full PSD makes bm3d estimate them through `np.trapz`,
  which numpy 2.x removed (bm3d 4.0.3 then crashes).
"""

from __future__ import annotations

from functools import lru_cache

import bm3d
import numpy as np
from numpy.fft import fft2, fftshift, ifft2, ifftshift

from hil_tune.errors import InputError
from hil_tune.raw import pack4, unpack4

NOISE_TYPES = ("gw", "g0", "g1", "g2", "g3", "g4", "g1w", "g2w", "g3w", "g4w")
# Base profiles without residual refiltering: 'refilter' would need two more knobs (lambda_thr3d_re,
# mu2_re) that the paper's parameter set does not have, and leaving them unset hits the np.trapz trap.
BASE_PROFILES = {
    "np": bm3d.profiles.BM3DProfile,
    "lc": bm3d.profiles.BM3DProfileLC,
    "vn": bm3d.profiles.BM3DProfileVN,
    "vn_old": bm3d.profiles.BM3DProfileVNOld,
    "high": bm3d.profiles.BM3DProfileHigh,
    "deb": bm3d.profiles.BM3DProfileDeb,
}
_KERNEL_SIZE = 101  # the example experiments' kernel support (pink noise uses the image size)
# bm3d matches and filters 8x8 blocks: a packed plane 8 samples high or wide kills the process with
# SIGSEGV inside the binary, 9 is the least it takes. Each plane sample is one 2x2 Bayer quad.
BM3D_BLOCK = 8
MIN_PLANE = BM3D_BLOCK + 1
MIN_SIDE = 2 * MIN_PLANE  # pixels of mosaic a side: the least any ISP block of this project takes


def check_size(h: int, w: int, what: str = "image") -> None:
    """Refuse a frame smaller than MIN_SIDE a side, with the reason, before any block sees it."""
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"{what}: {h}x{w} is smaller than {MIN_SIDE}x{MIN_SIDE}, the least the ISP takes "
            f"(BM3D's {BM3D_BLOCK}x{BM3D_BLOCK} blocks need {MIN_PLANE} samples a side of each Bayer plane)"
        )


def _base_kernel(noise_type: str, shape: tuple[int, int]) -> np.ndarray:
    """Correlation kernel of the bm3d examples' noise type, before variance normalisation."""
    family = noise_type[:2]
    size = np.array(shape if family == "g4" else (_KERNEL_SIZE, _KERNEL_SIZE))
    lo = np.floor(size / 2).astype(int)
    hi = (np.floor(size / 2) - (1 - size % 2)).astype(int)
    uu, vv = np.meshgrid(np.arange(-lo[0], hi[0] + 1), np.arange(-lo[1], hi[1] + 1))
    beta = 0.8
    if family == "g1":
        kernel = np.atleast_2d(16 - np.abs(np.linspace(1, 31, 31) - 16))
    elif family == "g2":
        kernel = np.cos(np.sqrt(uu**2 + vv**2)) * bm3d.gaussian_kernel((int(size[0]), int(size[1])), 10)
    elif family == "g3":
        kernel = np.cos(uu + vv) * bm3d.gaussian_kernel((int(size[0]), int(size[1])), 10)
    elif family == "g4":
        n = size[0] * size[1]
        spectrum = np.sqrt((np.sqrt(n) * 1e-2) / (np.sqrt(uu**2 + vv**2) + np.sqrt(n) * 1e-2))
        kernel = fftshift(ifft2(ifftshift(spectrum)))
    else:  # gw, g0: white
        kernel = np.array([[1.0]])
        beta = 0.0
    if noise_type.endswith("w") and noise_type != "gw":
        kernel = kernel / np.sqrt(np.sum(np.abs(kernel) ** 2))
        with_white = np.sqrt((1 - beta) + beta * np.abs(fft2(kernel, (int(size[0]), int(size[1])))) ** 2)
        kernel = fftshift(ifft2(with_white))
    kernel = np.real(kernel)
    return kernel / np.sqrt(np.sum(kernel**2))


@lru_cache(maxsize=64)
def _unit_psd(noise_type: str, shape: tuple[int, int]) -> np.ndarray:
    """PSD of unit-variance noise of this type on a plane of `shape`, in bm3d's convention.

    The kernel is folded (summed modulo the plane size) rather than cropped, so small patches get the
    circular version of the same correlation instead of a truncated kernel.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise type {noise_type!r} is not one of {', '.join(NOISE_TYPES)}")
    kernel = _base_kernel(noise_type, shape)
    folded = np.zeros(shape, dtype=np.float64)
    rows = np.arange(kernel.shape[0]) % shape[0]
    cols = np.arange(kernel.shape[1]) % shape[1]
    np.add.at(folded, (rows[:, None], cols[None, :]), kernel)
    folded /= np.sqrt(np.sum(folded**2))  # folding overlaps taps; renormalise to unit variance
    psd = np.abs(fft2(folded)) ** 2 * shape[0] * shape[1]
    psd.setflags(write=False)
    return psd


def noise_psd(noise_type: str, variance: float, shape: tuple[int, int]) -> np.ndarray:
    """Noise PSD for bm3d: mean(psd) / (H * W) equals `variance`."""
    return _unit_psd(noise_type, (int(shape[0]), int(shape[1]))) * variance


def bm3d_profile(
    *, filter_strength: float, lambda_thr3d: float, mu2: float, base: str = "np", threads: int = 1
) -> bm3d.BM3DProfile:
    """A BM3DProfile of the named base with the swept knobs set (never left to auto-estimation)."""
    if base not in BASE_PROFILES:
        raise ValueError(f"bm3d base profile {base!r} is not one of {', '.join(BASE_PROFILES)}")
    profile = BASE_PROFILES[base]()
    profile.filter_strength = float(filter_strength)
    profile.lambda_thr3d = float(lambda_thr3d)
    profile.mu2 = float(mu2)
    profile.num_threads = int(threads)
    return profile


def denoise_packed(
    packed: np.ndarray,
    *,
    filter_strength: float,
    noise_type: str,
    noise_var: float,
    lambda_thr3d: float,
    mu2: float,
    noise_var_scale: float = 0.01,
    base_profile: str = "np",
    threads: int = 1,
) -> np.ndarray:
    """BM3D on (h, w, C) planes in one call; filter_strength 0 returns the input unchanged."""
    if filter_strength == 0:
        return packed
    if min(packed.shape[:2]) < MIN_PLANE:
        raise InputError(f"bm3d: planes of {packed.shape[0]}x{packed.shape[1]} are below {MIN_PLANE} a side")
    psd = noise_psd(noise_type, noise_var * noise_var_scale, packed.shape[:2])
    profile = bm3d_profile(
        filter_strength=filter_strength, lambda_thr3d=lambda_thr3d, mu2=mu2, base=base_profile, threads=threads
    )
    out = bm3d.bm3d(packed.astype(np.float64), psd, profile)
    return np.asarray(out, dtype=np.float32).reshape(packed.shape)


def denoise_mosaic(mosaic: np.ndarray, cfa: str, **kwargs: object) -> np.ndarray:
    """(H, W) mosaic -> denoised mosaic (float32, clipped to [0, 1]). See denoise_packed for kwargs."""
    if kwargs.get("filter_strength") == 0:
        return mosaic.astype(np.float32, copy=False)
    packed = pack4(mosaic.astype(np.float32, copy=False), cfa)
    out = unpack4(denoise_packed(packed, **kwargs), cfa)  # type: ignore[arg-type]
    return np.clip(out, 0.0, 1.0, out=out)
