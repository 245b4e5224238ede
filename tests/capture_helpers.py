"""A fast profile for capture tests: the synthetic ISP with noise reduction held off in its region,
so a 32x32 sample costs milliseconds (bm3d has its own tests)."""

from __future__ import annotations

from pathlib import Path

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.profiles import Profile, load_profile

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


FIVE_PHOTOS = [
    "bundled:coffee",
    "bundled:chelsea",
    "bundled:rocket",
    "bundled:astronaut",
    "bundled:immunohistochemistry",
]


def fast_sweep(tmp: Path, text: str = FAST_PROFILE) -> tuple[Path, Profile]:
    """Six 32x32 samples of each of five photos on sim, in the fast region: the proxy and predictor
    tests' shared dataset (`text`: the profile, BOARD_FAST for the emulated board's). Returns
    (dataset folder, profile)."""
    prof = load_profile(fast_profile(tmp, text))
    plan = build_plan(prof, resolve_sources(FIVE_PHOTOS), samples_per_source=6, patch=32, region="fast")
    folder = DatasetFolder(tmp / "ds")
    folder.create(plan)
    run_capture(folder.root, CaptureSettings("sim", {"sensor_size": 32}))
    return folder.root, prof
