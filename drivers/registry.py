"""Drivers by name: the four built in, plus any a third-party package declares.

A package adds a driver without touching this repo by declaring, in its pyproject.toml,

    [project.entry-points."hil_tune.drivers"]
    mycam = "mypkg.driver:MyCamDriver"

Built-in drivers are imported lazily, so a machine without harvesters or pyusb can still run the
simulator, and `hil-tune drivers` can say which driver is missing what.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from hil_tune.drivers.base import Driver
from hil_tune.drivers.errors import DeviceNotFound
from hil_tune.profiles import Profile

ENTRY_POINT_GROUP = "hil_tune.drivers"

BUILTIN: dict[str, str] = {
    "sim": "hil_tune.drivers.sim:SimDriver",
    "genicam": "hil_tune.drivers.genicam_driver:GenICamDriver",
    "serial": "hil_tune.drivers.serial_driver:SerialDriver",
    "usb": "hil_tune.drivers.usb_driver:UsbDriver",
}


def registered() -> dict[str, str]:
    """Name -> 'module:Class' of every driver; a built-in name cannot be taken over by a plug-in."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def driver_class(name: str) -> type[Driver]:
    targets = registered()
    if name not in targets:
        raise DeviceNotFound(f"no driver named {name!r}; registered: {', '.join(sorted(targets))}")
    module_name, _, attr = targets[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise DeviceNotFound(f"driver {name!r} ({targets[name]}) cannot be loaded: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DeviceNotFound(f"driver {name!r} ({targets[name]}) is not a hil_tune Driver")
    return cls


def create_driver(name: str, profile: Profile | str, **options: Any) -> Driver:
    """A driver instance, not yet open (construction does no I/O)."""
    cls = driver_class(name)
    try:
        inspect.signature(cls).bind(profile, **options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p != "profile"]
        raise DeviceNotFound(f"driver {name!r}: {err}; it takes {', '.join(accepted)}") from None
    return cls(profile, **options)
