"""The genicam driver against viky.cti, the real GenTL producer shipped in the genicam wheel."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
from rigs import rig

from hil_tune.drivers import DeviceNotFound, DeviceTimeout, ParameterRejected, ProtocolError
from hil_tune.drivers.genicam_driver import GenICamDriver, bundled_producer
from hil_tune.drivers.registry import create_driver
from hil_tune.profiles import parse_profile

CTI = bundled_producer()
pytestmark = pytest.mark.skipif(CTI is None, reason="the genicam wheel with viky.cti is not installed")


def viky_profile(**map_overrides):
    data = tomllib.loads(Path(__file__).parents[1].joinpath("profiles", "viky.toml").read_text())
    data["device"]["map"].update(map_overrides)
    return parse_profile(data, "viky-test")


def test_discover_lists_the_producers_cameras():
    found = GenICamDriver.discover(cti=str(CTI))
    assert [f["serial_number"] for f in found] == ["0", "1", "2"]
    assert {f["model"] for f in found} == {"Viky"}


def test_device_by_serial_number_and_a_clear_error_for_an_unknown_one():
    with create_driver("genicam", "viky", cti=str(CTI), device="2") as drv:
        assert drv.describe().serial_number == "2"
    with pytest.raises(DeviceNotFound, match="serials: 0, 1, 2"):
        create_driver("genicam", "viky", cti=str(CTI), device="7").open()


def test_missing_producer_is_device_not_found(tmp_path):
    with pytest.raises(DeviceNotFound, match="does not exist"):
        create_driver("genicam", "viky", cti=str(tmp_path / "none.cti")).open()


def test_producer_from_the_standard_environment_variable(monkeypatch):
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(CTI.parent))
    assert GenICamDriver.available() == (True, "ready")
    with create_driver("genicam", "viky") as drv:
        assert drv.describe().model == "Viky"


def test_a_node_missing_from_the_node_map_is_named():
    profile = viky_profile(**{"ball-size": {"node": "NoSuchNode"}})
    with pytest.raises(ProtocolError, match="NoSuchNode"):
        GenICamDriver(profile, cti=str(CTI)).open()


def test_a_profile_range_the_node_cannot_hold_is_refused_at_open():
    profile = viky_profile(**{"ball-size": {"node": "BouncingBallSize", "scale": 10.0}})
    with pytest.raises(ParameterRejected, match=r"BouncingBallSize range 1\.\.40"):
        GenICamDriver(profile, cti=str(CTI)).open()


def test_locked_feature_is_written_with_the_stream_stopped_and_frames_follow(tmp_path):
    with rig("genicam", tmp_path) as r, r.driver as drv:
        for width in (320.0, 640.0, 480.0):
            applied = drv.set_params({"width": width})
            assert drv.capture().image.shape[1] == int(applied["width"]) == int(width)


def test_nodes_pushed_while_streaming_and_read_back():
    with create_driver("genicam", "viky", cti=str(CTI)) as drv:
        drv.capture()
        assert drv.set_params({"ball-size": 33, "frame-rate": 100})["ball-size"] == 33.0
        nm = drv._ia.remote_device.node_map
        assert nm.BouncingBallSize.value == 33 and nm.AcquisitionFrameRate.value == 100.0
        drv.capture()


def test_capture_times_out_cleanly_and_the_device_still_works():
    with create_driver("genicam", "viky", cti=str(CTI)) as drv:
        drv.set_params({"frame-rate": 5})
        drv.capture()
        t = time.monotonic()
        with pytest.raises(DeviceTimeout):
            drv.capture(timeout=0.02)
        assert time.monotonic() - t < 0.5
        drv.set_params({"frame-rate": 100})
        assert drv.capture(timeout=2).image.size


def test_a_failed_write_rolls_back_what_was_written():
    # PayloadSize is read-only on viky: the second write fails after the first succeeded. The scale
    # makes its value (10240080 at 400x400) read as 640, inside the profile's width range.
    profile = viky_profile(**{"width": {"node": "PayloadSize", "scale": 16000.125}})
    drv = GenICamDriver(profile, cti=str(CTI))
    with drv:
        before = drv.get_params()
        with pytest.raises(ProtocolError, match="not writable") as err:
            drv.set_params({"ball-size": 7, "width": 480})
        assert drv.get_params() == before
        assert any("rolled back" in note for note in err.value.__notes__)  # a claim the read-back made
