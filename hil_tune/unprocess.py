"""Unprocess an sRGB photo into a realistic Bayer RAW (Brooks et al., CVPR 2019).

Why: the paper trains on RAW it has, and we have few real RAW files; but any sRGB photo becomes a
plausible RAW with a *known* ground truth once each ISP step is inverted with random camera-like
draws: tone, colour matrix, white balance, mosaic, then shot + read noise. The sRGB is kept as the
reference image ("human viewing" task), and the draws are kept in `meta["ideal_params"]`: the ISP
parameters that undo them, which tests use to prove the ISP and unprocessing agree.

Differences from the paper's code, on purpose:
- the tone step inverts the *profile's* tone curve (sRGB by default) instead of Brooks' smoothstep,
  because our ISP applies exactly that curve; otherwise no parameter set could reach the reference;
- the result is quantised as a 12-bit sensor with a black level, so unprocessed and real RAW go
  through the same normalisation path.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hil_tune.raw import RawFrame, mosaic_rgb
from hil_tune.transfer import invert_curve

# XYZ -> camera matrices of four cameras, from Brooks et al.'s released unprocessing code.
XYZ2CAMS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ]
)
RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)

SENSOR_BLACK = 256.0
SENSOR_WHITE = 4095.0


def random_rgb2cam(rng: np.random.Generator) -> np.ndarray:
    """A random convex mix of the four cameras' matrices, rows normalised to sum to 1 (greys stay grey)."""
    weights = rng.uniform(1e-8, 1e8, size=(len(XYZ2CAMS), 1, 1))
    xyz2cam = (XYZ2CAMS * weights).sum(axis=0) / weights.sum()
    rgb2cam = xyz2cam @ RGB2XYZ
    return rgb2cam / rgb2cam.sum(axis=-1, keepdims=True)


def random_gains(rng: np.random.Generator) -> tuple[float, float, float]:
    """(overall brightness gain, red gain, blue gain) as drawn by Brooks et al."""
    rgb_gain = 1.0 / rng.normal(0.8, 0.1)
    red_gain = rng.uniform(1.9, 2.4)
    blue_gain = rng.uniform(1.5, 1.9)
    return float(rgb_gain), float(red_gain), float(blue_gain)


def random_noise_levels(rng: np.random.Generator) -> tuple[float, float]:
    """(shot, read) noise levels on the log-linear line Brooks et al. fitted to real sensors."""
    log_shot = rng.uniform(np.log(0.0001), np.log(0.012))
    shot = np.exp(log_shot)
    log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
    return float(shot), float(np.exp(log_read))


def position_noise(seed: int, origin: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise for the rows and columns of a window at `origin` of a photo.

    Why per row: each row of the whole photo has its own generator (seeded by the draw and the
    row), so a window's noise is the whole photo's noise there, whatever the window. Skipping to
    the first column costs `x0` draws per row, which is cheap next to the float stages it saves.
    """
    h, w = shape
    y0, x0 = origin
    out = np.empty((h, w))
    for r in range(h):
        out[r] = np.random.default_rng([seed, y0 + r]).standard_normal(x0 + w)[x0:]
    return out


def crop_window(shape: tuple[int, ...], h: int, w: int) -> tuple[int, int, int, int]:
    """(y, x, h, w) of the centre crop of at most h x w that `RawFrame.center_crop` takes of the
    whole photo's unprocessing (even sizes and offsets), for a photo of `shape` (H, W, ...)."""
    H, W = shape[0] // 2 * 2, shape[1] // 2 * 2
    h, w = min(h, H) // 2 * 2, min(w, W) // 2 * 2
    return (H - h) // 4 * 2, (W - w) // 4 * 2, h, w


def unprocess_crop(srgb: np.ndarray, crop: int, **kwargs: object) -> RawFrame:
    """`unprocess(srgb, ...).center_crop(crop, crop)`, exactly, without unprocessing the rest."""
    y, x, h, w = crop_window(np.shape(srgb), crop, crop)
    frame = unprocess(np.asarray(srgb)[y : y + h, x : x + w], origin=(y, x), **kwargs)  # type: ignore[arg-type]
    return replace(frame, meta={**frame.meta, "crop": [y, x, h, w]})


def _safe_invert_gains(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Divide by the WB gains, but let bright pixels keep saturating (Brooks' highlight preservation)."""
    gray = rgb.mean(axis=-1, keepdims=True)
    inflection = 0.9
    mask = (np.maximum(gray - inflection, 0.0) / (1.0 - inflection)) ** 2
    inv = 1.0 / gains
    safe = np.maximum(mask + (1.0 - mask) * inv, inv)
    return rgb * safe


def unprocess(
    srgb: np.ndarray,
    *,
    seed: int,
    cfa: str = "RGGB",
    tone: str = "srgb",
    gamma: float = 2.2,
    noise: bool = True,
    source: str = "",
    origin: tuple[int, int] = (0, 0),
) -> RawFrame:
    """sRGB image (H, W, 3; uint8 or float in [0, 1]) -> RawFrame with the sRGB kept as reference.

    Odd sizes are cropped by one pixel. The draws (gains, matrix, noise) come from `seed` alone,
    and the noise at a pixel from `seed` and the pixel's place in the whole photo: `srgb` may be a
    window of a photo at `origin` (even offsets), and the result is then exactly that window of the
    whole photo's unprocessing. So a crop is taken before unprocessing (`crop_window`), and memory
    follows the crop, not the photo.
    """
    if origin[0] % 2 or origin[1] % 2 or min(origin) < 0:
        raise ValueError(f"origin {origin}: a window starts at even, non-negative offsets (the CFA phase)")
    img = np.asarray(srgb)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    img = img[..., :3]
    ref = (img.astype(np.float32) / 255.0) if img.dtype == np.uint8 else np.clip(img.astype(np.float32), 0, 1)
    h, w = ref.shape[:2]
    ref = np.ascontiguousarray(ref[: h // 2 * 2, : w // 2 * 2])

    rng = np.random.default_rng(seed)
    rgb2cam = random_rgb2cam(rng)
    rgb_gain, red_gain, blue_gain = random_gains(rng)
    shot, read = random_noise_levels(rng)

    lin = invert_curve(ref.astype(np.float64), tone, gamma)
    cam = lin @ rgb2cam.T
    cam = _safe_invert_gains(cam, np.array([red_gain, 1.0, blue_gain]) * rgb_gain)
    cam = np.clip(cam, 0.0, 1.0)
    mosaic = mosaic_rgb(cam, cfa)
    if noise:
        variance = mosaic * shot + read
        mosaic = mosaic + position_noise(seed, origin, mosaic.shape) * np.sqrt(variance)
    codes = np.clip(np.round(mosaic * (SENSOR_WHITE - SENSOR_BLACK) + SENSOR_BLACK), 0, SENSOR_WHITE)

    cam2rgb = np.linalg.inv(rgb2cam)
    ideal = {"gain-r": red_gain, "gain-g": 1.0, "gain-b": blue_gain, "digital-gain": rgb_gain}
    for i in range(3):
        for j in range(3):
            ideal[f"ccm{i}{j}"] = float(cam2rgb[i, j])
    return RawFrame(
        mosaic=codes.astype(np.uint16),
        cfa=cfa,
        black_level=(SENSOR_BLACK,) * 4,  # type: ignore[arg-type]
        white_level=SENSOR_WHITE,
        as_shot_wb=(red_gain, 1.0, blue_gain),
        rgb_cam=cam2rgb,
        reference=ref,
        source=source,
        meta={
            "unprocessed": True,
            "seed": seed,
            "shot_noise": shot if noise else 0.0,
            "read_noise": read if noise else 0.0,
            "ideal_params": ideal,
        },
    )
