"""One error family for every transport, so capture and live loops recover the same way everywhere.

`recoverable` tells a loop whether reconnecting and retrying can help (a pulled cable, a lost
reply) or whether a person must act (no such device, a value the device refuses).
"""

from __future__ import annotations

from hil_tune.errors import HilTuneError, ParameterError


class DeviceError(HilTuneError):
    """Base of every device fault."""

    recoverable = False


class DeviceNotFound(DeviceError):
    """No driver by that name, no producer file, or no device matching the selector."""


class DeviceTimeout(DeviceError):
    """The device did not answer within the call's timeout (after the transport's retries)."""

    recoverable = True


class DeviceDisconnected(DeviceError):
    """The link went away (unplugged cable, closed port, ENODEV)."""

    recoverable = True


class ProtocolError(DeviceError):
    """The device answered, but not in a way the protocol allows (bad frame, missing node, status)."""

    recoverable = True


class ParameterRejected(DeviceError, ParameterError):
    """A value is outside the profile, or the device refused it. Nothing was applied."""


class DriverOptionError(HilTuneError, ValueError):
    """A driver was opened with an option it cannot take (a timeout of 0, an unknown firmware):
    the user's input, named, before anything reaches a device."""


class VerifyError(DeviceError):
    """Read-back after a write disagrees with what was written; the write was rolled back."""

    recoverable = True
