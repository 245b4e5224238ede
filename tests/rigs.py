"""Real devices without hardware, for the driver tests: each rig opens one driver on one backend.

sim: the synthetic ISP in-process; serial: the board firmware behind a pty (pyserial opens it like
a USB adapter); usb: the same firmware behind a pyusb backend object; genicam: viky.cti, the GenTL
producer the genicam wheel ships. Denoise is off at power-on so a frame costs milliseconds; the ISP
tests cover bm3d.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hil_tune.drivers.base import Frame
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.scene import sensor_frame
from hil_tune.drivers.emulated.serial_pty import SerialEmulator
from hil_tune.drivers.emulated.usb_backend import EmulatedUsbBackend
from hil_tune.drivers.genicam_driver import bundled_producer
from hil_tune.drivers.registry import create_driver
from hil_tune.isp import SyntheticISP
from hil_tune.params import ParamDict
from hil_tune.profiles import load_profile
from hil_tune.raw import RawFrame
from hil_tune.testing.contract import Rig

FAST = {"filter-strength": 0.0}
SENSOR_SIZE = 32


def isp_check(profile_name: str) -> Callable[[Frame, ParamDict], bool]:
    """The frame is bit-identical to the synthetic ISP's render of the scene with `params`."""
    profile = load_profile(profile_name)
    isp = SyntheticISP(profile)
    scene = sensor_frame("astronaut", SENSOR_SIZE, profile)

    def check(frame: Frame, params: ParamDict) -> bool:
        return bool(np.array_equal(frame.image, isp.run_frame(scene, params)))

    return check


BOARD_CHANGE: ParamDict = {"gain-r": 1.8, "ccm01": 0.25, "noise-type": "g3"}


def _renders(profile_name: str) -> Callable[[RawFrame, ParamDict], np.ndarray]:
    return SyntheticISP(load_profile(profile_name)).run_frame


@contextmanager
def _sim(kind: str, tmp_path: Path, **options: Any) -> Iterator[Rig]:
    # sim-tags: frames carry their setting's tag, 3 frames late; sim-count: no tags, dropped by count.
    timing = {"sim": {}, "sim-tags": {"settle_frames": 3}, "sim-count": {"settle_frames": 2, "frame_tags": False}}
    options = {**timing[kind], **options}
    drv = create_driver("sim", "synthetic", sensor_size=SENSOR_SIZE, power_on=FAST, **options)
    yield Rig(drv, BOARD_CHANGE, {"gain-r": 9.0}, isp_check("synthetic"), renders=_renders("synthetic"))


@contextmanager
def _serial(kind: str, tmp_path: Path, **options: Any) -> Iterator[Rig]:
    fw = BoardFirmware(sensor_size=SENSOR_SIZE, power_on=FAST, **options)
    with SerialEmulator(fw, link=tmp_path / "board0") as emu:
        drv = create_driver("serial", "emulated-board", device=str(tmp_path / "board0"), attempt_timeout=0.2)
        try:
            yield Rig(drv, BOARD_CHANGE, {"gain-r": 9.0}, isp_check("emulated-board"), {"emu": emu, "fw": fw},
                      renders=_renders("emulated-board"))  # fmt: skip
        finally:
            drv.close()


@contextmanager
def _usb(kind: str, tmp_path: Path, **options: Any) -> Iterator[Rig]:
    fw = BoardFirmware(sensor_size=SENSOR_SIZE, power_on=FAST, **options)
    backend = EmulatedUsbBackend.with_board(fw)
    drv = create_driver("usb", "emulated-board", backend=backend, serial_number=fw.serial_number)
    try:
        yield Rig(drv, BOARD_CHANGE, {"gain-r": 9.0}, isp_check("emulated-board"), {"backend": backend, "fw": fw},
                  renders=_renders("emulated-board"))  # fmt: skip
    finally:
        drv.close()


@contextmanager
def _genicam(kind: str, tmp_path: Path, **options: Any) -> Iterator[Rig]:
    cti = bundled_producer()
    assert cti is not None, "the genicam wheel ships viky.cti"
    drv = create_driver("genicam", "viky", cti=str(cti), timeout=3.0, **options)

    def width_is(frame: Frame, params: ParamDict) -> bool:
        return frame.image.shape[1] == int(params["width"])

    try:
        yield Rig(drv, {"width": 480.0, "ball-size": 12.0}, {"ball-size": 41}, width_is, {"cti": cti})
    finally:
        drv.close()


RIGS: dict[str, Callable[..., Any]] = {
    "sim": _sim, "sim-tags": _sim, "sim-count": _sim, "serial": _serial, "usb": _usb, "genicam": _genicam,
}  # fmt: skip


def rig(kind: str, tmp_path: Path, **options: Any) -> Any:
    """The rig of one kind (a context manager yielding a Rig)."""
    return RIGS[kind](kind, tmp_path, **options)
