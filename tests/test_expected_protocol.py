"""The shipped scripted board (hil_tune.testing.protocol) pins a register driver's exact traffic."""

from __future__ import annotations

import pytest

from hil_tune.drivers import protocol as p
from hil_tune.drivers.errors import ParameterRejected
from hil_tune.drivers.serial_driver import SerialDriver
from hil_tune.drivers.usb_driver import UsbDriver
from hil_tune.profiles import load_profile
from hil_tune.testing.protocol import expected_protocol, opening

GAIN_R, GAIN_B = 0x0114, 0x011C  # profiles/emulated-board.toml: scale 100


@pytest.mark.parametrize("driver", [SerialDriver, UsbDriver])
def test_a_delta_push_is_one_write_of_the_changed_registers_with_its_readback(driver):
    """Two knobs changed: one WRITE of exactly those two registers (committed), nothing else."""
    script = [(p.Cmd.WRITE, p.write_request([(GAIN_R, 150), (GAIN_B, 180)], commit=True),
               p.write_reply(7, [150, 180]))]  # fmt: skip
    with expected_protocol(driver, "emulated-board", script) as drv:
        drv.set_params({"gain-r": 1.5, "gain-b": 1.8}, verify=True)
        assert drv.applied["gain-r"] == 1.5 and drv.applied["gain-b"] == 1.8


def test_what_the_device_holds_at_open_is_what_the_driver_reports():
    with expected_protocol(SerialDriver, "emulated-board", [], holding={"gain-r": 2.3}) as drv:
        assert drv.applied["gain-r"] == 2.3


def test_other_bytes_than_the_script_fail_naming_both():
    script = [(p.Cmd.WRITE, p.write_request([(GAIN_R, 151)], commit=True), p.write_reply(p.NO_TAG, [151]))]
    with (
        pytest.raises(AssertionError, match=r"exchange 2: expected WRITE .* the driver sent WRITE "),
        expected_protocol(SerialDriver, "emulated-board", script) as drv,
    ):
        drv.set_params({"gain-r": 1.5})


def test_an_exchange_left_unused_fails_and_a_refused_value_sends_nothing():
    script = [(p.Cmd.WRITE, p.write_request([(GAIN_R, 150)], commit=True), p.write_reply(p.NO_TAG, [150]))]
    with (
        pytest.raises(AssertionError, match=r"1 scripted exchange.* never happened: WRITE"),
        expected_protocol(SerialDriver, "emulated-board", script) as drv,
        pytest.raises(ParameterRejected),
    ):
        drv.set_params({"gain-r": 99.0})  # out of range: refused before the link


def test_a_refused_write_is_an_error_of_its_family_and_the_rollback_is_on_the_wire():
    """The board answers OUT_OF_RANGE: ParameterRejected, the driver writes back what the board
    held before and reads every register to confirm it (the rollback the CLI reports is real)."""
    read_all = opening(load_profile("emulated-board"))[1]
    script = [(p.Cmd.WRITE, p.write_request([(GAIN_R, 150)], commit=True), b"", p.Status.OUT_OF_RANGE),
              (p.Cmd.WRITE, p.write_request([(GAIN_R, 100)], commit=True), p.write_reply(p.NO_TAG, [100])),
              read_all]  # fmt: skip
    with expected_protocol(SerialDriver, "emulated-board", script) as drv, pytest.raises(ParameterRejected):
        drv.set_params({"gain-r": 1.5})
    assert drv.applied["gain-r"] == 1.0
