"""The scene a simulated sensor sees: a bundled photo unprocessed to RAW, or a RAW/sRGB file.

Shared by the `sim` driver and the emulated board's firmware so both 'see' the same thing.
"""

from __future__ import annotations

from pathlib import Path

from hil_tune.inputs import BUNDLED_IMAGES, bundled_frame, load_input
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame


def sensor_frame(sensor: str, size: int | None, profile: Profile, seed: int = 0) -> RawFrame:
    """RAW frame of `sensor` (bundled image name or file path), centre-cropped to size x size."""
    tone, gamma = profile.pipeline.tone, profile.pipeline.gamma
    if sensor in BUNDLED_IMAGES:
        frame = bundled_frame(sensor, seed=seed, tone=tone, gamma=gamma)
    else:
        frame = load_input(Path(sensor), seed=seed, tone=tone, gamma=gamma)
    if size is not None:
        h, w = frame.shape
        side = min(size, h, w) // 2 * 2
        frame = frame.center_crop(side, side)
    return frame
