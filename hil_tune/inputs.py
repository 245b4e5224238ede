"""Turn whatever a user points at into a RawFrame: a camera RAW file, or an sRGB image to unprocess.

Also names the bundled sRGB photos (scikit-image ships them in its wheel) that the demo and tests use
when no camera file is at hand, and the folder of real RAW files named by HIL_TUNE_RAW_DIR.
"""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hil_tune.errors import InputError
from hil_tune.limits import check_pixels
from hil_tune.raw import RAW_SUFFIXES, RawFrame, read_raw
from hil_tune.unprocess import unprocess, unprocess_crop

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm"}
RAW_DIR_ENV = "HIL_TUNE_RAW_DIR"

# scikit-image sample photos that ship inside its wheel (no download): colour, varied scenes.
BUNDLED_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def stable_seed(name: str, seed: int = 0) -> int:
    """A per-source seed that does not depend on Python's randomised str hash."""
    return (zlib.crc32(name.encode()) ^ seed) & 0x7FFFFFFF


def read_srgb(path: str | Path) -> np.ndarray:
    """An 8-bit RGB image from disk (alpha dropped, greyscale expanded)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget speaks
            im = Image.open(p)
        with im:
            check_pixels(*im.size, str(p))  # from the header, before any decode allocates
            im.load()
            if im.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                raise InputError(f"{p}: unsupported image mode {im.mode} (need 8-bit RGB or grey)")
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"{p}: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{p}: cannot decode image ({err}); the file may be truncated") from None


def load_input(
    path: str | Path, *, seed: int = 0, tone: str = "srgb", gamma: float = 2.2, crop: int | None = None
) -> RawFrame:
    """RAW file -> RawFrame as read; sRGB image -> unprocessed RawFrame with the image as reference.
    With `crop`, the centre crop of at most crop x crop: for an sRGB image it is taken before
    unprocessing (the same pixels, noise included, as cropping after it)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        rgb = read_srgb(p)
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise InputError(f"{p}: image of size {rgb.shape[1]}x{rgb.shape[0]} is too small")
        kw = {"seed": stable_seed(p.name, seed), "tone": tone, "gamma": gamma, "source": str(p)}
        return unprocess_crop(rgb, crop, **kw) if crop else unprocess(rgb, **kw)  # type: ignore[arg-type]
    if suffix in RAW_SUFFIXES:
        return _center(read_raw(p), crop)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    # Unknown suffix: let LibRaw try, and say both kinds were considered.
    try:
        return _center(read_raw(p), crop)
    except InputError:
        raise InputError(
            f"{p}: unsupported input (neither an image {sorted(IMAGE_SUFFIXES)} nor a RAW file LibRaw reads)"
        ) from None


def bundled_image(name: str) -> np.ndarray:
    """One of BUNDLED_IMAGES as uint8 RGB."""
    from skimage import data

    if name not in BUNDLED_IMAGES:
        raise InputError(f"no bundled image {name!r}; known: {', '.join(BUNDLED_IMAGES)}")
    return np.asarray(getattr(data, name)())[..., :3]


def bundled_frame(
    name: str, *, seed: int = 0, tone: str = "srgb", gamma: float = 2.2, crop: int | None = None
) -> RawFrame:
    kw = {"seed": stable_seed(name, seed), "tone": tone, "gamma": gamma, "source": f"skimage:{name}"}
    rgb = bundled_image(name)
    return unprocess_crop(rgb, crop, **kw) if crop else unprocess(rgb, **kw)  # type: ignore[arg-type]


def _center(frame: RawFrame, crop: int | None) -> RawFrame:
    return frame.center_crop(crop, crop) if crop else frame


def raw_dir_files() -> list[Path]:
    """RAW files in HIL_TUNE_RAW_DIR (empty when unset)."""
    root = os.environ.get(RAW_DIR_ENV)
    if not root:
        return []
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"{RAW_DIR_ENV}={root}: not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in RAW_SUFFIXES)
