"""JPEG compression: encode at the profile's quality, decode, and hand on the decoded image.

The compression artefacts are part of the ISP's output that a proxy has to imitate, so the block
really round-trips through libjpeg (Pillow) rather than simulating it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Planar (3, H, W) float in [0, 1] -> interleaved (H, W, 3) uint8 with rounding."""
    x = np.clip(rgb, 0.0, 1.0) * np.float32(255.0)
    x += np.float32(0.5)
    return np.ascontiguousarray(x.astype(np.uint8).transpose(1, 2, 0))


def jpeg_roundtrip(rgb: np.ndarray, *, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Planar (3, H, W) float in [0, 1], or interleaved uint8 (H, W, 3) -> decoded uint8 (H, W, 3).

    quality 0 only quantises to 8 bits.
    """
    img8 = rgb if rgb.dtype == np.uint8 else to_uint8(rgb)
    if quality == 0:
        return img8
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality} outside 1..100")
    buf = io.BytesIO()
    Image.fromarray(img8, "RGB").save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
