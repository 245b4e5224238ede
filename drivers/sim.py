"""`sim`: the synthetic software ISP behind the driver interface.

It behaves like a board, not like a function call: a write takes effect only after
`settle_frames` frame boundaries, frames carry the tag of the setting they were made with (unless
`frame_tags=False`, which makes the base class fall back to dropping the settle count), and an
optional latency is paid per transaction. So the loops above it are tested against the same
timing problems a real ISP has.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from hil_tune.drivers.base import DEFAULT_TIMEOUT_S, Deadline, DeviceInfo, Driver, Grab
from hil_tune.drivers.emulated.scene import sensor_frame
from hil_tune.drivers.errors import DriverOptionError
from hil_tune.drivers.settle import SettleQueue
from hil_tune.isp.firmwares import FIRMWARES, isp_for
from hil_tune.isp.pipeline import SyntheticISP
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame

FIRMWARE = "sim-1"


class SimDriver(Driver):
    name = "sim"
    transport = "in-process"

    def __init__(
        self,
        profile: Profile | str = "synthetic",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        sensor: str = "astronaut",
        sensor_size: int | None = 128,
        latency_s: float = 0.0,
        settle_frames: int = 0,
        frame_tags: bool = True,
        seed: int = 0,
        device: str | None = None,
        power_on: Mapping[str, object] | None = None,
        firmware: str = "synthetic",
    ) -> None:
        super().__init__(profile, timeout=timeout)
        if latency_s < 0 or settle_frames < 0:
            raise DriverOptionError("latency_s and settle_frames must be >= 0")
        self.sensor, self.sensor_size, self.seed = sensor, sensor_size, seed
        self.latency_s, self.settle_frames, self.frame_tags = latency_s, settle_frames, frame_tags
        self.serial_number = device or "sim-0"
        self._power_on, _ = self.space.validate(power_on or {})
        if firmware not in FIRMWARES:
            raise DriverOptionError(f"unknown firmware {firmware!r}; known: {', '.join(FIRMWARES)}")
        self.firmware = firmware
        self._isp: SyntheticISP | None = None
        self._scene: RawFrame | None = None

    @classmethod
    def discover(cls, timeout: float = DEFAULT_TIMEOUT_S, **options: Any) -> list[dict[str, Any]]:
        return [{"selector": "sim-0", "model": "synthetic ISP", "serial_number": "sim-0"}]

    def _connect(self, deadline: Deadline) -> None:
        self._isp = isp_for(self.firmware, self.profile)
        self._registers: ParamDict = dict(self._power_on)
        self._settle: SettleQueue[ParamDict] = SettleQueue(dict(self._registers), self.settle_frames)
        self._tag = 0
        self._frame_id = 0

    def _disconnect(self) -> None:
        self._isp = None

    def _info(self) -> DeviceInfo:
        return DeviceInfo(
            driver=self.name,
            transport=self.transport,
            vendor="hil-tune",
            model="synthetic ISP",
            serial_number=self.serial_number,
            firmware=f"{FIRMWARE}-{self.firmware}",
            raw_injection=True,
            live_sensor=True,
            frame_tags=self.frame_tags,
            settle_frames=self.settle_frames,
            extra={"profile": self.profile.name, "sensor": self.sensor},
        )

    def _transaction(self) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)

    def _read(self, deadline: Deadline) -> ParamDict:
        self._transaction()
        return dict(self._registers)

    def _write(self, values: ParamDict, deadline: Deadline) -> tuple[int | None, ParamDict | None]:
        self._transaction()
        self._registers.update(values)
        self._tag = (self._tag + 1) & 0xFFFFFFFF
        self._settle.commit(dict(self._registers), self._tag)
        return (self._tag if self.frame_tags else None), None

    def _grab(self, raw: RawFrame | None, deadline: Deadline) -> Grab:
        assert self._isp is not None
        self._transaction()
        self._settle.frame_boundary()  # settings reach the pipeline only here, settle_frames late
        if raw is None:
            if self._scene is None:
                self._scene = sensor_frame(self.sensor, self.sensor_size, self.profile, self.seed)
            raw = self._scene
        image = self._isp.run_frame(raw, self._settle.active)
        self._frame_id += 1
        return Grab(
            image=image,
            frame_id=self._frame_id,
            device_tag=self._settle.active_tag if self.frame_tags else None,
            device_time_ns=time.monotonic_ns(),
            raw=np.asarray(raw.mosaic),
            cfa=raw.cfa,
            raw_levels=(raw.black_level, raw.white_level),
        )
