"""Who renders a parameter set on an image for inference and evaluation: the built-in ISP in a
worker pool, or a device through its driver.

Why one interface: `predict`, `eval predictor` and `tune` are the experiment that matters on a
device, and they must measure the same thing whether the ISP is our software or a board on a
cable. A `Renderer` takes (frame, parameters) jobs and returns the device's 8-bit output, counts
its queries (every render is one), says what it is (`describe`), and restores what the device held
when it is closed. Device faults are handled as in capture: reconnect, bounded retries with
backoff, then one clear error that names the image and the setting.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import numpy as np

from hil_tune.drivers.base import Driver
from hil_tune.drivers.errors import DeviceError
from hil_tune.drivers.reconnect import Backoff, RetriesExhaustedError, with_reconnect
from hil_tune.drivers.registry import create_driver
from hil_tune.errors import HilTuneError
from hil_tune.isp.firmwares import isp_for
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame

Job = tuple[RawFrame, ParamDict]


class Renderer(Protocol):
    calls: int

    def render(self, jobs: list[Job], names: list[str] | None = None) -> list[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# -- the built-in ISP in worker processes ---------------------------------------------------------

_isp: Any = None


def _init(profile_data: dict[str, Any], firmware: str) -> None:
    global _isp
    _isp = isp_for(firmware, Profile.model_validate(profile_data))


def _render(job: Job) -> np.ndarray:
    return _isp.run_frame(*job)


class BuiltinRenderer:
    """The simulated ISP of a firmware, rendering on `workers` processes (bm3d is single-threaded)."""

    def __init__(self, profile: Profile, firmware: str, workers: int = 2) -> None:
        isp_for(firmware, profile)  # an unknown firmware fails here, not in a worker
        self.firmware = firmware
        self.pool = ProcessPoolExecutor(
            max(1, workers), initializer=_init, initargs=(profile.model_dump(mode="json"), firmware)
        )
        self.calls = 0

    def render(self, jobs: list[Job], names: list[str] | None = None) -> list[np.ndarray]:
        self.calls += len(jobs)
        return list(self.pool.map(_render, jobs))

    def describe(self) -> dict[str, Any]:
        return {"driver": "builtin", "firmware": self.firmware}

    def close(self) -> None:
        self.pool.shutdown()


# -- a device through its driver ------------------------------------------------------------------


class DeviceRenderer:
    """Renders through any driver (built-in or a plug-in): push the setting (validated and snapped
    by the driver's base class, so nothing out of range reaches the device), inject the RAW frame,
    take the settled output. What the device held at open is pushed back at close."""

    def __init__(
        self,
        driver: Driver | str,
        profile: Profile | None = None,
        *,
        options: dict[str, Any] | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        timeout_s: float = 60.0,
    ) -> None:
        if isinstance(driver, str):
            if profile is None:
                raise ValueError("a driver given by name needs the profile to open it with")
            driver = create_driver(driver, profile, **(options or {}))
        self.driver = driver
        if profile is not None and driver.profile.sha256 != profile.sha256:
            raise HilTuneError(
                f"driver {type(driver).__name__} runs profile {driver.profile.name} "
                f"({driver.profile.sha256[:12]}), the run was trained on {profile.name} ({profile.sha256[:12]})"
            )
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.calls = 0
        self.driver.open()
        self.info = self.driver.describe()
        self._held = self.driver.get_params()

    @property
    def raw_injection(self) -> bool:
        return bool(self.info.raw_injection)

    def describe(self) -> dict[str, Any]:
        return self.info.as_dict()

    def _once(self, frame: RawFrame | None, params: ParamDict) -> tuple[np.ndarray, RawFrame | None]:
        self.driver.set_params(params, verify=True)
        got = self.driver.capture(frame, timeout=self.timeout_s)
        raw = None
        if frame is None and got.raw is not None and got.cfa is not None:
            black, white = got.raw_levels if got.raw_levels is not None else ((0.0,) * 4, 65535.0)
            raw = RawFrame(np.asarray(got.raw), got.cfa, tuple(black), float(white))  # type: ignore[arg-type]
        return got.image, raw

    def render_one(self, frame: RawFrame | None, params: ParamDict, name: str = "frame") -> np.ndarray:
        return self.capture(frame, params, name)[0]

    def capture(
        self, frame: RawFrame | None, params: ParamDict, name: str = "frame"
    ) -> tuple[np.ndarray, RawFrame | None]:
        """(output, the RAW the device returned when no frame was injected) for one setting, with
        reconnect and bounded retries on a transient fault."""
        if frame is not None and not self.raw_injection:
            raise HilTuneError(f"{self.info.driver}: this device cannot take an injected RAW frame ({name})")
        try:
            policy = Backoff(self.retries, self.backoff_s)
            out, _ = with_reconnect(self.driver, lambda: self._once(frame, params), policy)
        except RetriesExhaustedError as gave_up:
            changed = {k: v for k, v in params.items() if self._held.get(k) != v}
            raise HilTuneError(
                f"{self.info.driver}: rendering {name} failed after {gave_up.attempts} attempt(s) "
                f"({gave_up}); setting: {changed}"
            ) from gave_up.cause
        self.calls += 1
        return out

    def render(self, jobs: list[Job], names: list[str] | None = None) -> list[np.ndarray]:
        labels = names or [f"job {k}" for k in range(len(jobs))]
        return [self.render_one(frame, params, label) for (frame, params), label in zip(jobs, labels, strict=True)]

    def close(self) -> None:
        try:
            if self.driver.is_open:
                self.driver.set_params(self._held, verify=True)
        except DeviceError:
            pass  # the device is gone: nothing to restore on it
        finally:
            self.driver.close()
