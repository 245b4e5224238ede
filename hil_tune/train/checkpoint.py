"""Checkpoints anyone can load safely: tensors only (`torch.load(weights_only=True)`), plus a JSON
sidecar that says what the weights mean (profile and its hash, parameter encoding, model kind and
configuration, dataset id, metrics). Loading against a different profile is refused, because the
encoded parameter vector would silently mean something else.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from hil_tune.atomic import atomic_write
from hil_tune.errors import HilTuneError
from hil_tune.profiles import Profile


class CheckpointError(HilTuneError):
    """A run folder or checkpoint is missing, unreadable, or made for another profile."""


class TrainSettingError(HilTuneError):
    """A training option out of its range (epochs, batch, learning rate, width ...)."""


def check_positive(**values: float) -> None:
    """Refuse a training setting that is not a finite positive number, naming the option."""
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise TrainSettingError(f"--{name.replace('_', '-')} {value}: must be a finite number above 0")


def encoding_of(profile: Profile) -> list[dict[str, Any]]:
    return [spec.describe() for spec in profile.space]


def save(path: Path, state: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """Write weights and sidecar atomically (temp + rename), sidecar last: a reader that finds the
    sidecar finds complete weights."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"cannot make {path.parent}: {err.strerror or err}") from None
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue(), CheckpointError)
    atomic_write(path.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str).encode(), CheckpointError)


def load(path: Path, profile: Profile | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise CheckpointError(f"{path}: no checkpoint (weights and {side.name} sidecar) there")
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{side}: not a hil-tune sidecar ({type(err).__name__}: {err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err})") from None
    except Exception as err:  # whatever a foreign or damaged file makes torch.load raise
        # torch's own message advises weights_only=False, which would run the file's code: never echo it.
        raise CheckpointError(
            f"{path}: not a hil-tune checkpoint, or a damaged one ({type(err).__name__}); nothing was loaded"
        ) from None
    if profile is not None and sidecar.get("profile_sha256") != profile.sha256:
        raise CheckpointError(
            f"{path}: made for profile {sidecar.get('profile')!r} ({str(sidecar.get('profile_sha256'))[:12]}), "
            f"not {profile.name!r} ({profile.sha256[:12]}): its parameter encoding would not match"
        )
    return state, sidecar
