"""What every benchmark's JSON opens with: which benchmark, when, and on what machine, so that
figures from two runs are never set side by side without it showing that they differ."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path


def header(
    name: str, *, cores: int | None = None, torch_version: str | None = None, device: str | None = None
) -> dict[str, str]:
    """`cores`: the cores the benchmark ran on, when it pinned itself (default: the machine's);
    `device`: the accelerator it ran on, if any."""
    machine = (
        f"{platform.machine()}, {os.cpu_count() if cores is None else cores} cores, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    if torch_version is not None:
        machine += f", torch {torch_version}"
    if device is not None:
        machine += f", {device}"
    return {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine}


def photo_dir() -> Path | None:
    """The training photos: HIL_TUNE_PHOTO_DIR, else ../shared/data/photos beside the project; None
    when neither is a folder (a benchmark that needs them says so)."""
    env = os.environ.get("HIL_TUNE_PHOTO_DIR")
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
    found = Path(env) if env else default
    return found if found.is_dir() else None
