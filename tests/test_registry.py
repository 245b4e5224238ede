"""Drivers by name, built in and from the `hil_tune.drivers` entry-point group."""

from __future__ import annotations

import sys

import pytest
from plugins import install_plugin

from hil_tune.drivers import DeviceNotFound, Driver, create_driver, driver_class, registered


def test_builtin_drivers_are_registered_and_load():
    assert {"sim", "genicam", "serial", "usb"} <= set(registered())
    for name in ("sim", "genicam", "serial", "usb"):
        assert issubclass(driver_class(name), Driver)


def test_unknown_driver_lists_the_known_ones():
    with pytest.raises(DeviceNotFound, match=r"no driver named 'nope'; registered: .*genicam.*sim"):
        create_driver("nope", "synthetic")


def test_unknown_option_is_refused_at_construction():
    with pytest.raises(DeviceNotFound, match=r"unexpected keyword argument 'bogus'; it takes .*sensor"):
        create_driver("sim", "synthetic", bogus=1)


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A package installed the way pip installs one: code plus a dist-info with entry_points.txt."""
    code = """
        from hil_tune.drivers.sim import SimDriver

        class AcmeDriver(SimDriver):
            name = "acme"
        """
    entry = {"acme": "acme_isp:AcmeDriver", "sim": "acme_isp:AcmeDriver", "broken": "acme_isp:Missing"}
    install_plugin(tmp_path, "acme_isp", code, entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("acme_isp", None)


def test_a_third_party_driver_plugs_in_through_its_entry_point(third_party):
    assert registered()["acme"] == "acme_isp:AcmeDriver"
    with create_driver("acme", "synthetic", sensor_size=16, power_on={"filter-strength": 0}) as drv:
        assert drv.describe().driver == "acme"
    # A plug-in cannot take over a built-in name, and a broken one says what is wrong.
    assert registered()["sim"] == "hil_tune.drivers.sim:SimDriver"
    with pytest.raises(DeviceNotFound, match="cannot be loaded"):
        driver_class("broken")
