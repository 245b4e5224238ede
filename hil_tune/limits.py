"""The largest image hil-tune decodes: a pixel budget checked from the file's header, before any
decode allocates.

Why: a 144 MP PNG decoded whole and then unprocessed in float32 costs gigabytes in one allocation,
and Pillow's own guard (DecompressionBombError) surfaces as a traceback. Nothing here needs more
than a large camera frame, so the budget defaults to 64 MP; HIL_TUNE_MAX_PIXELS raises or lowers it.
"""

from __future__ import annotations

import os

from hil_tune.errors import InputError

MAX_PIXELS_ENV = "HIL_TUNE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        budget = int(value)
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={value!r}: not a whole number of pixels") from None
    if budget < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={value!r}: must be at least 1")
    return budget


def check_pixels(width: int, height: int, label: str) -> None:
    """InputError when width x height exceeds the budget, naming the file and the way out."""
    budget = max_pixels()
    if width * height > budget:
        raise InputError(
            f"{label}: {width}x{height} ({width * height:,} pixels) is over the pixel budget of "
            f"{budget:,} (set {MAX_PIXELS_ENV} to allow more)"
        )
