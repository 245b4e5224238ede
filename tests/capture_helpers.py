"""A fast profile for capture tests: the synthetic ISP with noise reduction held off in its region,
so a 32x32 sample costs milliseconds (bm3d has its own tests)."""

from __future__ import annotations

from pathlib import Path

FAST_PROFILE = """
extends = "synthetic"
name = "synthetic-fast"

[region.fast]
filter-strength = [0.0, 0.0]
gain-r = [0.8, 2.6]
gain-g = [0.8, 1.3]
gain-b = [0.8, 2.6]
digital-gain = [0.6, 1.6]
ccm00 = [0.8, 2.2]
ccm11 = [0.8, 2.2]
ccm22 = [0.8, 2.2]
ccm01 = [-1.0, 0.5]
ccm02 = [-1.0, 0.5]
ccm10 = [-1.0, 0.5]
ccm12 = [-1.0, 0.5]
ccm20 = [-1.0, 0.5]
ccm21 = [-1.0, 0.5]
usm-amount = [0.1, 1.5]
usm-sigma = [0.3, 3.0]
"""

BOARD_FAST = """
extends = "emulated-board"
name = "emulated-board"

[region.fast]
filter-strength = [0.0, 0.0]
gain-r = [0.8, 2.6]
digital-gain = [0.6, 1.6]
usm-amount = [0.1, 1.5]
"""


def fast_profile(tmp: Path, text: str = FAST_PROFILE) -> Path:
    path = tmp / "fast.toml"
    path.write_text(text)
    return path
