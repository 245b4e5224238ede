"""The one contract every driver keeps, run against sim, serial (pty), usb (pyusb backend) and
genicam (viky.cti). A new driver earns its place by passing this file."""

from __future__ import annotations

import numpy as np
import pytest
from rigs import rig

from hil_tune.drivers import DeviceError, ParameterRejected

KINDS = ["sim", "sim-tags", "sim-count", "serial", "usb", "genicam"]


@pytest.fixture(params=KINDS)
def any_rig(request, tmp_path):
    with rig(request.param, tmp_path) as r:
        yield r


def test_construction_does_no_io_and_calls_need_an_open_device(any_rig):
    drv = any_rig.driver
    assert not drv.is_open
    with pytest.raises(DeviceError, match="not open"):
        drv.get_params()
    drv.close()  # closing what was never opened is fine


def test_open_close_are_idempotent_and_reopen_works(any_rig):
    drv = any_rig.driver
    drv.open()
    drv.open()
    first = drv.get_params()
    drv.close()
    drv.close()
    with drv:
        assert drv.get_params().keys() == first.keys()
    assert not drv.is_open


def test_describe_names_identity_and_capabilities(any_rig):
    with any_rig.driver as drv:
        info = drv.describe()
        assert info.driver == drv.name and info.serial_number and info.firmware
        assert info.live_sensor or info.raw_injection
        assert info.settle_frames >= 0
        assert set(drv.space.names) == set(drv.get_params())


def test_set_params_verifies_snaps_and_returns_the_full_set(any_rig):
    with any_rig.driver as drv:
        name, value = next(iter(any_rig.change.items()))
        spec = drv.space[name]
        off_grid = value + spec.step * 0.3 if spec.kind == "grid" else value
        applied = drv.set_params({name: off_grid})
        assert applied[name] == value  # snapped to the grid before it left the host
        assert drv.get_params() == applied
        assert set(applied) == set(drv.space.names)


def test_out_of_range_is_rejected_before_any_byte_and_nothing_changes(any_rig):
    with any_rig.driver as drv:
        before = drv.get_params()
        seq = drv.param_seq
        with pytest.raises(ParameterRejected, match="outside"):
            drv.set_params({**any_rig.change, **any_rig.out_of_range})
        assert drv.get_params() == before
        assert drv.param_seq == seq
        with pytest.raises(ParameterRejected, match="unknown parameter"):
            drv.set_params({"no-such-knob": 1})


def test_capture_after_a_change_is_made_with_the_new_parameters(any_rig):
    with any_rig.driver as drv:
        first = drv.capture()
        applied = drv.set_params(any_rig.change)
        frame = drv.capture()
        assert frame.param_seq == drv.param_seq == first.param_seq + 1
        assert frame.params == applied
        assert any_rig.made_with(frame, applied), "a frame made before the change was handed out"
        assert not any_rig.made_with(first, applied)
        assert frame.frame_id > first.frame_id
        assert frame.host_time_ns >= first.host_time_ns


def test_frames_are_copies_the_caller_owns(any_rig):
    with any_rig.driver as drv:
        frame = drv.capture()
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
        assert frame.image.flags.writeable and frame.image.flags.owndata
        frame.image[:] = 0
        again = drv.capture()
        assert again.image.any()


def test_no_change_means_no_write(any_rig):
    with any_rig.driver as drv:
        applied = drv.set_params(any_rig.change)
        seq = drv.param_seq
        assert drv.set_params(any_rig.change) == applied
        assert drv.param_seq == seq


def test_raw_injection_is_processed_or_clearly_refused(any_rig):
    from hil_tune.inputs import bundled_frame
    from hil_tune.isp import SyntheticISP

    raw = bundled_frame("coffee").center_crop(32, 48)
    with any_rig.driver as drv:
        if not drv.describe().raw_injection:
            with pytest.raises(DeviceError, match="cannot take injected RAW"):
                drv.capture(raw)
            return
        applied = drv.set_params(any_rig.change)
        frame = drv.capture(raw)
        assert (frame.raw == raw.mosaic).all() and frame.cfa == raw.cfa
        assert (frame.image == SyntheticISP(drv.profile).run_frame(raw, applied)).all()
