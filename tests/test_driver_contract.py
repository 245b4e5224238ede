"""The one contract every driver keeps (hil_tune.testing.contract, shipped for plug-in authors),
run against sim, serial (pty), usb (pyusb backend) and genicam (viky.cti); and run the way a
plug-in's own suite runs it, from a test file outside this repository's tests."""

from __future__ import annotations

import pytest
from rigs import RIGS, rig

from hil_tune.testing.contract import DriverContract

pytest_plugins = ["pytester"]


class TestBuiltinDrivers(DriverContract):
    @pytest.fixture(params=list(RIGS))
    def rig(self, request, tmp_path):
        with rig(request.param, tmp_path) as r:
            yield r


def test_a_plug_in_suite_runs_the_shipped_contract(pytester):
    """What the README tells a plug-in author to write: every contract test runs and passes."""
    pytester.makepyfile(
        test_mycam="""
import pytest
from hil_tune.drivers.registry import create_driver
from hil_tune.isp import SyntheticISP
from hil_tune.testing.contract import DriverContract, Rig


class TestMyCam(DriverContract):
    @pytest.fixture
    def rig(self):
        drv = create_driver("sim", "synthetic", sensor_size=32, power_on={"filter-strength": 0.0})
        isp = SyntheticISP(drv.profile)

        def made_with(frame, params):
            return frame.params == params and frame.image.any()

        yield Rig(drv, {"gain-r": 1.8}, {"gain-r": 9.0}, made_with, renders=isp.run_frame)
        drv.close()
"""
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len([n for n in dir(DriverContract) if n.startswith("test_")]))
