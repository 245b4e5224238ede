"""The usb driver through real pyusb over a backend object that emulates the board's firmware."""

from __future__ import annotations

import pytest
from rigs import BOARD_CHANGE, rig

from hil_tune.drivers import DeviceDisconnected, DeviceNotFound, DeviceTimeout
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.usb_backend import EmulatedUsbBackend
from hil_tune.drivers.registry import create_driver
from hil_tune.drivers.usb_driver import UsbDriver
from hil_tune.inputs import bundled_frame


@pytest.fixture
def board(tmp_path):
    with rig("usb", tmp_path) as r:
        r.driver.open()
        yield r


def test_found_by_vid_pid_and_serial_number_through_pyusb(board):
    found = UsbDriver.discover(backend=board.extra["backend"])
    assert found == [
        {"selector": "HT-0001", "profile": "emulated-board", "bus": 1, "address": 7,
         "vendor_id": 0x1209, "product_id": 0x4854},
    ]  # fmt: skip
    wrong = create_driver("usb", "emulated-board", backend=board.extra["backend"], serial_number="nope")
    with pytest.raises(DeviceNotFound, match="serial 'nope'"):
        wrong.open()


def test_unplug_then_rediscovery_at_a_new_address(board):
    drv, backend = board.driver, board.extra["backend"]
    applied = drv.set_params(BOARD_CHANGE)
    backend.unplug()
    with pytest.raises(DeviceDisconnected):
        drv.capture()
    with pytest.raises(DeviceNotFound):
        drv.reconnect()
    backend.replug()
    drv.reconnect()
    assert drv.link.dev.address == 8  # type: ignore[attr-defined]
    assert drv.get_params() == applied  # the board kept its registers
    assert board.made_with(drv.capture(), applied)


def test_reset_re_enumerates_and_keeps_working(board):
    drv = board.driver
    applied = drv.set_params({"gain-g": 0.8})
    drv.reset()
    assert drv.get_params() == applied


def test_lost_and_corrupt_replies_are_retried_once_executed(board):
    drv, backend, fw = board.driver, board.extra["backend"], board.extra["fw"]
    before = len(fw.written)
    backend.boards[0].faults.drop_replies = 1
    backend.boards[0].faults.corrupt_replies = 1
    drv.set_params({"usm-sigma": 2.0})
    assert len(fw.written) == before + 1
    backend.boards[0].faults.silent = True
    with pytest.raises(DeviceTimeout):
        drv.get_params(timeout=0.3)


def test_raw_injection_over_usb_matches_the_isp(board):
    drv = board.driver
    raw = bundled_frame("coffee").center_crop(32, 48)
    applied = drv.set_params({"digital-gain": 1.2})
    frame = drv.capture(raw)
    assert frame.image.shape == (32, 48, 3)
    assert (frame.raw == raw.mosaic).all() and frame.cfa == raw.cfa
    from hil_tune.isp import SyntheticISP

    expected = SyntheticISP(drv.profile).run_frame(raw, applied)
    assert (frame.image == expected).all()


def test_without_a_board_usb_says_so(tmp_path):
    backend = EmulatedUsbBackend.with_board(BoardFirmware(sensor_size=16))
    backend.unplug()
    with pytest.raises(DeviceNotFound, match="1209:4854"):
        create_driver("usb", "emulated-board", backend=backend).open()
