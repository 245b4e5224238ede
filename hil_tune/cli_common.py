"""What every CLI module shares: the consoles, parameter input (NAME=VALUE and JSON files) and
how a command opens a driver from its options. No command lives here, and this module imports
no other CLI module, so the command modules form a tree (cli -> cli_* -> cli_common), not a cycle.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from hil_tune.errors import InputError
from hil_tune.profiles import Profile, load_profile

out = Console()
err = Console(stderr=True)


def parse_sets(pairs: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--set {pair!r}: expected NAME=VALUE")
        try:
            values[name.strip()] = float(raw)
        except ValueError:
            values[name.strip()] = raw.strip()
    return values


def read_params_file(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a JSON parameter file ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f'{path}: expected a JSON object {{"name": value}}')
    return data


def _coerce(value: str, default: object) -> object:
    if isinstance(default, bool):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise InputError(f"option value {value!r} is not a boolean")
        return value.lower() in ("1", "true", "yes")
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(value)
            except ValueError:
                raise InputError(f"option value {value!r} is not {kind.__name__}") from None
    return value


def open_options(name: str, device: str | None, pairs: list[str], timeout: float) -> tuple[Any, dict[str, Any]]:
    """The driver class and its keyword options, typed after the driver's own signature."""
    from hil_tune.drivers.registry import driver_class

    cls = driver_class(name)
    params = inspect.signature(cls).parameters
    options: dict[str, Any] = {"timeout": timeout}
    if device is not None:
        options["device"] = device
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in params or key == "profile":
            known = ", ".join(p for p in params if p != "profile")
            raise InputError(f"--option {pair!r}: expected KEY=VALUE with KEY one of {known}")
        options[key] = _coerce(value, params[key].default)
    return cls, options


def driver_profile(cls: Any, profile: str | None) -> Profile:
    """The profile asked for, or the one the driver is made for (its constructor's default)."""
    return load_profile(profile or inspect.signature(cls).parameters["profile"].default)


def make_driver(name: str, profile: str | None, device: str | None, pairs: list[str] | None, timeout: float) -> Any:
    """The one factory the CLI uses: options typed after the driver's signature, then the
    registry's create_driver (which checks them against it)."""
    from hil_tune.drivers.registry import create_driver

    cls, options = open_options(name, device, pairs or [], timeout)
    return create_driver(name, driver_profile(cls, profile), **options)
