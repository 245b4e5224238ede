"""Device drivers, shipped as `hil_tune.drivers` (setuptools maps this folder into the package).

One interface (`Driver`, in base.py) in front of the synthetic ISP (`sim`), GenICam cameras
(`genicam`, harvesters), and register boards over serial (`serial`, pyserial) or USB (`usb`,
pyusb); plus, in `emulated/`, the emulated board (firmware, pty, pyusb backend) and scene that tests and the
demo use in place of hardware. Drivers are looked up by name in registry.py.
"""

from hil_tune.drivers.base import DeviceInfo, Driver, Frame
from hil_tune.drivers.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceNotFound,
    DeviceTimeout,
    ParameterRejected,
    ProtocolError,
    VerifyError,
)
from hil_tune.drivers.registry import create_driver, driver_class, registered

__all__ = [
    "DeviceDisconnected",
    "DeviceError",
    "DeviceInfo",
    "DeviceNotFound",
    "DeviceTimeout",
    "Driver",
    "Frame",
    "ParameterRejected",
    "ProtocolError",
    "VerifyError",
    "create_driver",
    "driver_class",
    "registered",
]
