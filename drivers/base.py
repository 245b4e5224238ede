"""The driver interface: what capture and live loops may assume about any ISP, soft or hard.

The base class owns everything that must be the same on every transport, so a new driver cannot
get it wrong: values are validated and snapped to the profile's grid before a byte leaves the host;
only changed values are written; writes are read back and rolled back on any failure; frames made
before a change are never handed out (by the device's frame tag where it has one, else by dropping
the profile's settle-frame count); every call has a deadline. A subclass supplies six small hooks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from hil_tune.drivers.errors import (
    DeviceError,
    DeviceTimeout,
    DriverOptionError,
    ParameterRejected,
    VerifyError,
)
from hil_tune.errors import ParameterError
from hil_tune.params import ParamDict, ParamSpace, ParamValue
from hil_tune.profiles import Profile, load_profile
from hil_tune.raw import RawFrame

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DeviceInfo:
    """What `describe()` answers: who the device is and what it can do."""

    driver: str
    transport: str
    vendor: str
    model: str
    serial_number: str
    firmware: str
    raw_injection: bool
    live_sensor: bool
    frame_tags: bool
    settle_frames: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Frame:
    """One processed frame, owned by the caller (arrays are copies, never device buffers).

    `params` are the values read back from the device for this frame; `param_seq` is the host's
    count of parameter changes the frame reflects (equal to the driver's `param_seq` once settled).
    """

    image: np.ndarray
    params: ParamDict
    param_seq: int
    frame_id: int
    host_time_ns: int
    device_time_ns: int | None = None
    raw: np.ndarray | None = None
    cfa: str | None = None
    settled: bool = True  # False: made while a change was still reaching the pipeline (live mode)
    raw_levels: tuple[tuple[float, float, float, float], float] | None = None  # black per site, white


@dataclass
class Grab:
    """What a driver's `_grab` hook returns: one frame as the device made it, tag included if any."""

    image: np.ndarray
    frame_id: int
    device_tag: int | None = None
    device_time_ns: int | None = None
    raw: np.ndarray | None = None
    cfa: str | None = None
    raw_levels: tuple[tuple[float, float, float, float], float] | None = None


class Deadline:
    """A point in time every blocking step of one call shares, so retries cannot stretch a timeout."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> float:
        left = self.left()
        if left <= 0:
            raise DeviceTimeout(f"{what}: no answer within {self.seconds:g} s")
        return left


class Driver(ABC):
    """Base of every driver. Construction does no I/O; `open()` and `close()` are idempotent."""

    name: ClassVar[str]
    transport: ClassVar[str]

    def __init__(self, profile: Profile | str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.space: ParamSpace = self.profile.space
        self.timeout = float(timeout)
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise DriverOptionError(f"timeout {timeout}: must be a finite number of seconds above 0")
        self._is_open = False
        self._seq = 0  # host count of parameter changes
        self._settled_tag: int | None = None  # device tag of the latest change, on tagging devices
        self._to_drop = 0  # frames still to drop after a change, on devices without tags
        self._flushed = False  # set by a `_write` that restarted the stream: no frame in flight is stale
        self._applied: ParamDict = {}
        # Recent settings (seq, device tag, values): what an unsettled frame was made with.
        self._history: deque[tuple[int, int | None, ParamDict]] = deque(maxlen=32)

    # -- hooks a driver supplies --------------------------------------------------------------

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this driver can run on this machine, and why not."""
        return True, "ready"

    @classmethod
    def discover(cls, timeout: float = DEFAULT_TIMEOUT_S, **options: Any) -> list[dict[str, Any]]:
        """Devices this driver can see, as plain dicts (selector, model, serial number...)."""
        return []

    @abstractmethod
    def _connect(self, deadline: Deadline) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _info(self) -> DeviceInfo: ...

    @abstractmethod
    def _read(self, deadline: Deadline) -> ParamDict:
        """Every parameter of the space as the device holds it now, snapped to the grid."""

    @abstractmethod
    def _write(self, values: ParamDict, deadline: Deadline) -> tuple[int | None, ParamDict | None]:
        """Write already-validated values so that they take effect together.

        Returns the device's tag for the new setting (None without frame tags) and, when the
        write's own reply carries it, the read-back of the written values (saves a round trip).
        """

    @abstractmethod
    def _grab(self, raw: RawFrame | None, deadline: Deadline) -> Grab: ...

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def param_seq(self) -> int:
        return self._seq

    @property
    def applied(self) -> ParamDict:
        """What the device holds, as of the last read-back (no I/O)."""
        return dict(self._applied)

    def link_bytes(self) -> int | None:
        """Bytes moved over the device link so far (both ways), for the live loop's cost per
        push; None where the transport does not count them."""
        return None

    def open(self) -> Self:
        if self._is_open:
            return self
        deadline = Deadline(self.timeout)
        self._connect(deadline)
        self._is_open = True
        try:
            self._applied = self._read(deadline)
        except BaseException:
            self.close()
            raise
        self._history.append((self._seq, None, dict(self._applied)))
        return self

    def close(self) -> None:
        """Release the device. Never raises: it runs on error paths and at interpreter exit."""
        if not self._is_open:
            return
        self._is_open = False
        try:
            self._disconnect()
        except Exception as err:
            log.warning("%s: error while closing (ignored): %s", self.name, err)

    def _made_with(self, tag: int | None) -> tuple[int, ParamDict, bool]:
        """The setting an unsettled frame was made with: by its tag, else the one before the latest."""
        if tag is not None:
            for seq, t, params in reversed(self._history):
                if t == tag:
                    return seq, dict(params), False
        if len(self._history) >= 2:
            seq, _, params = self._history[-2]
            return seq, dict(params), False
        return self._seq, dict(self._applied), False

    def reconnect(self) -> None:
        """Close and open again (the driver finds its device again by serial number)."""
        self.close()
        self.open()
        # Whatever the device did while away, the next frame must reflect what it holds now.
        self._mark_changed(None)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> None:
        if not self._is_open:
            raise DeviceError(f"{self.name}: device is not open (use `with driver:` or driver.open())")

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    # -- the interface ----------------------------------------------------------------------------

    def describe(self) -> DeviceInfo:
        self._require_open()
        return self._info()

    def get_params(self, timeout: float | None = None) -> ParamDict:
        self._require_open()
        return dict(self._read(self._deadline(timeout)))

    def check(self, params: Mapping[str, object]) -> ParamDict:
        """Validate and snap values against the profile without touching the device."""
        try:
            values, _warnings = self.space.validate(params, partial=True)
        except ParameterError as err:
            raise ParameterRejected(f"{self.name}: {err}; nothing was sent") from None
        return values

    def set_params(
        self, params: Mapping[str, object], *, verify: bool = True, timeout: float | None = None
    ) -> ParamDict:
        """Apply (a subset of) the parameters; returns the full set the device now holds.

        Only values that differ from the device's are written. On any failure the values written
        so far are restored before the error propagates, so the device is never left half-set.
        """
        self._require_open()
        wanted = self.check(params)
        deadline = self._deadline(timeout)
        before = dict(self._applied)
        changes = {k: v for k, v in wanted.items() if before.get(k) != v}
        if not changes:
            return before
        try:
            tag, readback = self._write(changes, deadline)
            after = {**before, **changes}
            if verify:
                got = {**before, **readback} if readback is not None else self._read(deadline)
                bad = {k: (v, got.get(k)) for k, v in changes.items() if got.get(k) != v}
                if bad:
                    detail = ", ".join(f"{k}: wrote {w}, read {g}" for k, (w, g) in bad.items())
                    raise VerifyError(f"{self.name}: read-back differs ({detail})")
                after = got
        except DeviceError as err:
            self._rollback(before, changes, err)
            raise
        self._applied = after
        self._mark_changed(tag)
        return dict(after)

    def _rollback(self, before: ParamDict, changes: ParamDict, err: DeviceError) -> None:
        """Restore what `changes` may have touched; a read-back decides whether that worked."""
        restore = {k: before[k] for k in changes if k in before}
        try:
            self._write(restore, Deadline(self.timeout))
        except DeviceError:
            for name, value in restore.items():  # one by one, so a refused key cannot block the rest
                with contextlib.suppress(DeviceError):
                    self._write({name: value}, Deadline(self.timeout))
        try:
            now = self._read(Deadline(self.timeout))
        except DeviceError as again:
            err.add_note(f"could not read back after rolling back ({again}); reconnect and re-push")
            return
        still = [k for k in restore if now.get(k) != before[k]]
        if still:
            err.add_note(f"rollback left {', '.join(still)} changed on the device; reconnect and re-push")
        else:
            err.add_note("rolled back: the device reads back the setting it held before this push")
        self._applied = now
        self._mark_changed(None)

    def _stream_restarted(self) -> None:
        """For `_write`: the stream was stopped and started, so every later frame has the new values."""
        self._flushed = True

    def _mark_changed(self, tag: int | None) -> None:
        self._seq += 1
        self._history.append((self._seq, tag, dict(self._applied)))
        info = self._info()
        flushed, self._flushed = self._flushed, False
        if info.frame_tags and tag is not None:
            self._settled_tag = tag
            self._to_drop = 0
        else:
            self._settled_tag = None
            self._to_drop = 0 if flushed else info.settle_frames

    def capture(self, raw: RawFrame | None = None, *, timeout: float | None = None, wait: bool = True) -> Frame:
        """The next frame made with the parameters of the latest `set_params`.

        `raw` injects a RAW frame on devices that accept one; without it a device shows its sensor.
        With wait=False (live loops) no frame is dropped: a frame made while a change was still
        settling comes back with settled=False and the parameters it was actually made with.
        """
        self._require_open()
        info = self._info()
        if raw is not None and not info.raw_injection:
            raise DeviceError(f"{self.name}: this device cannot take injected RAW frames")
        if raw is None and not info.live_sensor:
            raise DeviceError(f"{self.name}: this device has no sensor; pass a RAW frame to inject")
        deadline = self._deadline(timeout)
        while True:
            deadline.check(f"{self.name}: capture")
            grab = self._grab(raw, deadline)
            seq, params, settled = self._seq, dict(self._applied), True
            if self._settled_tag is not None:
                if grab.device_tag is None or _tag_before(grab.device_tag, self._settled_tag):
                    if wait:
                        continue
                    seq, params, settled = self._made_with(grab.device_tag)
                else:
                    self._settled_tag = None
            elif self._to_drop > 0:
                self._to_drop -= 1
                if wait:
                    continue
                seq, params, settled = self._made_with(None)
            image = np.array(grab.image, copy=True)
            raw_copy = None if grab.raw is None else np.array(grab.raw, copy=True)
            return Frame(
                image=image,
                params=params,
                param_seq=seq,
                settled=settled,
                frame_id=grab.frame_id,
                host_time_ns=time.time_ns(),
                device_time_ns=grab.device_time_ns,
                raw=raw_copy,
                cfa=grab.cfa,
                raw_levels=grab.raw_levels,
            )


def _tag_before(tag: int, target: int) -> bool:
    """Serial-number arithmetic on 32-bit tags, so a tag wrapping past 2**32 still orders right."""
    gap = (target - tag) & 0xFFFFFFFF
    return 0 < gap < 2**31


def scale_to_device(value: ParamValue, choices: tuple[str, ...] | None, scale: float) -> int:
    """Fixed-point register value of a snapped parameter value (a choice travels as its index)."""
    if choices is not None:
        return choices.index(str(value))
    return round(float(value) * scale)


def scale_from_device(raw: int, choices: tuple[str, ...] | None, scale: float) -> ParamValue:
    if choices is not None:
        if not 0 <= raw < len(choices):
            raise ParameterError(f"register holds choice index {raw}, outside 0..{len(choices) - 1}")
        return choices[raw]
    return raw / scale
