"""The one contract every hil-tune driver keeps, shipped so that a plug-in driver's own test suite
can run it: subclass `DriverContract` in a test module and give it a `rig` fixture that yields a
`Rig` (an unopened driver on your device or its emulator, plus a setting change whose effect a
frame shows). pytest then runs every contract test against it:

    import pytest
    from hil_tune.testing.contract import DriverContract, Rig

    class TestMyCam(DriverContract):
        @pytest.fixture
        def rig(self):
            driver = MyCamDriver("mycam-profile")
            yield Rig(driver, change={"gain": 2.0}, out_of_range={"gain": 99.0},
                      made_with=lambda frame, params: frame.meta["gain"] == params["gain"])
            driver.close()

hil-tune's own drivers (sim, serial over a pty, usb over a pyusb backend, genicam on viky.cti)
pass it in tests/test_driver_contract.py. Needs pytest (the `test` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from hil_tune.drivers import DeviceError, ParameterRejected
from hil_tune.drivers.base import Driver, Frame
from hil_tune.params import ParamDict
from hil_tune.raw import RawFrame


@dataclass
class Rig:
    """One driver under test, not yet open, and what the contract needs to know about it."""

    driver: Driver
    change: ParamDict  # a change whose effect on a frame `made_with` can see
    out_of_range: dict[str, object]  # values the profile refuses
    made_with: Callable[[Frame, ParamDict], bool]  # was this frame made with these parameters?
    extra: dict[str, Any] = field(default_factory=dict)  # whatever the rig's own tests need
    renders: Callable[[RawFrame, ParamDict], np.ndarray] | None = None  # the output for an injected RAW


class DriverContract:
    """Every test a driver must pass; subclasses provide the `rig` fixture."""

    def test_construction_does_no_io_and_calls_need_an_open_device(self, rig: Rig) -> None:
        drv = rig.driver
        assert not drv.is_open
        with pytest.raises(DeviceError, match="not open"):
            drv.get_params()
        drv.close()  # closing what was never opened is fine

    def test_open_close_are_idempotent_and_reopen_works(self, rig: Rig) -> None:
        drv = rig.driver
        drv.open()
        drv.open()
        first = drv.get_params()
        drv.close()
        drv.close()
        with drv:
            assert drv.get_params().keys() == first.keys()
        assert not drv.is_open

    def test_describe_names_identity_and_capabilities(self, rig: Rig) -> None:
        with rig.driver as drv:
            info = drv.describe()
            assert info.driver == drv.name and info.serial_number and info.firmware
            assert info.live_sensor or info.raw_injection
            assert info.settle_frames >= 0
            assert set(drv.space.names) == set(drv.get_params())

    def test_set_params_verifies_snaps_and_returns_the_full_set(self, rig: Rig) -> None:
        with rig.driver as drv:
            name, value = next(iter(rig.change.items()))
            spec = drv.space[name]
            off_grid = value + spec.step * 0.3 if spec.kind == "grid" else value
            applied = drv.set_params({name: off_grid})
            assert applied[name] == value  # snapped to the grid before it left the host
            assert drv.get_params() == applied
            assert set(applied) == set(drv.space.names)

    def test_out_of_range_is_rejected_before_any_byte_and_nothing_changes(self, rig: Rig) -> None:
        with rig.driver as drv:
            before = drv.get_params()
            seq = drv.param_seq
            with pytest.raises(ParameterRejected, match="outside"):
                drv.set_params({**rig.change, **rig.out_of_range})
            assert drv.get_params() == before
            assert drv.param_seq == seq
            with pytest.raises(ParameterRejected, match="unknown parameter"):
                drv.set_params({"no-such-knob": 1})

    def test_capture_after_a_change_is_made_with_the_new_parameters(self, rig: Rig) -> None:
        with rig.driver as drv:
            first = drv.capture()
            applied = drv.set_params(rig.change)
            frame = drv.capture()
            assert frame.param_seq == drv.param_seq == first.param_seq + 1
            assert frame.params == applied
            assert rig.made_with(frame, applied), "a frame made before the change was handed out"
            assert not rig.made_with(first, applied)
            assert frame.frame_id > first.frame_id
            assert frame.host_time_ns >= first.host_time_ns

    def test_frames_are_copies_the_caller_owns(self, rig: Rig) -> None:
        with rig.driver as drv:
            frame = drv.capture()
            assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
            assert frame.image.flags.writeable and frame.image.flags.owndata
            frame.image[:] = 0
            again = drv.capture()
            assert again.image.any()

    def test_no_change_means_no_write(self, rig: Rig) -> None:
        with rig.driver as drv:
            applied = drv.set_params(rig.change)
            seq = drv.param_seq
            assert drv.set_params(rig.change) == applied
            assert drv.param_seq == seq

    def test_raw_injection_is_processed_or_clearly_refused(self, rig: Rig) -> None:
        from hil_tune.inputs import bundled_frame

        raw = bundled_frame("coffee").center_crop(32, 48)
        with rig.driver as drv:
            if not drv.describe().raw_injection:
                with pytest.raises(DeviceError, match="cannot take injected RAW"):
                    drv.capture(raw)
                return
            applied = drv.set_params(rig.change)
            frame = drv.capture(raw)
            assert (frame.raw == raw.mosaic).all() and frame.cfa == raw.cfa
            assert frame.image.shape[:2] == raw.shape
            if rig.renders is not None:  # the device's own ISP, where the rig can compute it
                assert (frame.image == rig.renders(raw, applied)).all()
