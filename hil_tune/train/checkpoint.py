"""Checkpoints anyone can load safely: tensors only (`torch.load(weights_only=True)`), plus a JSON
sidecar that says what the weights mean (profile and its hash, parameter encoding, model kind and
configuration, dataset id, metrics). Loading against a different profile is refused, because the
encoded parameter vector would silently mean something else.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import uuid
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


SIDECAR_KEY = "sidecar_json"  # the sidecar's text, inside the weights file


def save(path: Path, state: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """Write the weights file atomically (temp + rename) with the sidecar's text inside it, then the
    JSON sidecar beside it, both marked with one `save_id`.

    Why the copy inside: two files cannot be replaced at once. A process killed between the two
    renames would leave epoch N's weights beside epoch N-1's sidecar (or none, after the first
    epoch), and a resume would read a history that does not match its weights. `load` reads the
    JSON beside the weights when it carries their `save_id` (so a person's edit is seen, and
    checked), and the copy inside them when it does not (a crash in between), mending the JSON."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"cannot make {path.parent}: {err.strerror or err}") from None
    text = json.dumps({**sidecar, "save_id": uuid.uuid4().hex}, indent=2, default=str)
    buf = io.BytesIO()
    torch.save({**state, SIDECAR_KEY: text}, buf)
    atomic_write(path, buf.getvalue(), CheckpointError)
    atomic_write(path.with_suffix(".json"), text.encode(), CheckpointError)


def load(path: Path, profile: Profile | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, sidecar) of a checkpoint; see `save` for which sidecar is read."""
    side = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (weights and {side.name} sidecar) there")
    state = _read_weights(path)
    inside = state.pop(SIDECAR_KEY, None)
    beside = _read_sidecar(side, required=not isinstance(inside, str))
    sidecar = beside
    if isinstance(inside, str):
        mine = json.loads(inside)
        if beside is None or beside.get("save_id") != mine.get("save_id"):
            sidecar = mine  # the JSON is from another save than these weights: a crash in between
            _mend(side, inside)
    assert sidecar is not None
    if profile is not None and sidecar.get("profile_sha256") != profile.sha256:
        raise CheckpointError(
            f"{path}: made for profile {sidecar.get('profile')!r} ({str(sidecar.get('profile_sha256'))[:12]}), "
            f"not {profile.name!r} ({profile.sha256[:12]}): its parameter encoding would not match"
        )
    return state, sidecar


def _read_sidecar(side: Path, *, required: bool) -> dict[str, Any] | None:
    if not side.is_file():
        if required:
            raise CheckpointError(f"{side.with_suffix('.pt')}: no checkpoint (weights and {side.name} sidecar) there")
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as err:
        if not required:
            return None  # torn or damaged: the copy inside the weights is read
        raise CheckpointError(f"{side}: not a hil-tune sidecar ({type(err).__name__}: {err})") from None


def _mend(side: Path, text: str) -> None:
    """Rewrite the JSON copy left behind by a crash (best effort: a read-only run folder still loads)."""
    with contextlib.suppress(OSError, CheckpointError):
        atomic_write(side, text.encode(), CheckpointError)


def _read_weights(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err})") from None
    except Exception as err:  # whatever a foreign or damaged file makes torch.load raise
        # torch's own message advises weights_only=False, which would run the file's code: never echo it.
        raise CheckpointError(
            f"{path}: not a hil-tune checkpoint, or a damaged one ({type(err).__name__}); nothing was loaded"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a hil-tune checkpoint (holds a {type(state).__name__})")
    return state
