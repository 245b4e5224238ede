"""`hil-tune drivers|devices|device|emulate`: bench work with one device from the shell.

Kept apart from cli.py so the main command file stays a table of contents; still thin: parse,
call the driver library, print.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hil_tune.cli_common import err, make_driver, out, parse_sets, read_params_file
from hil_tune.errors import InputError

device_app = typer.Typer(no_args_is_help=True, help="Talk to one device: describe, get, set, capture.")
emulate_app = typer.Typer(no_args_is_help=True, help="Run an emulated board for tests, demos and bench dry-runs.")

DriverOpt = Annotated[str, typer.Option("--driver", help="Driver name (hil-tune drivers lists them).")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Profile name or path (default: the driver's).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Port, serial number or index, per driver.")]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE, repeatable.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds for each device call.")]


def register(app: typer.Typer) -> None:
    app.command("drivers")(drivers)
    app.command("devices")(devices)
    app.add_typer(device_app, name="device")
    app.add_typer(emulate_app, name="emulate")


def drivers() -> None:
    """List registered drivers and whether each can run on this machine."""
    from hil_tune.drivers.errors import DeviceError
    from hil_tune.drivers.registry import driver_class, registered

    table = Table("driver", "implementation", "ready", "why")
    for name, target in sorted(registered().items()):
        try:
            ok, why = driver_class(name).available()
        except DeviceError as e:
            ok, why = False, str(e)
        table.add_row(name, target, "yes" if ok else "no", why)
    out.print(table)


def devices(
    driver: Annotated[str | None, typer.Option("--driver", help="Only this driver.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What each driver can see: cameras on GenTL producers, boards on USB and serial ports."""
    from hil_tune.drivers.errors import DeviceError
    from hil_tune.drivers.registry import driver_class, registered

    found: dict[str, Any] = {}
    for name in [driver] if driver else sorted(registered()):
        cls = driver_class(name)
        ok, why = cls.available()
        if not ok:
            found[name] = {"error": why}
            continue
        try:
            found[name] = cls.discover(timeout=1.0)
        except DeviceError as e:
            found[name] = {"error": str(e)}
    if as_json:
        out.print_json(json.dumps(found, default=str))
        return
    for name, items in found.items():
        if isinstance(items, dict):
            out.print(f"[bold]{name}[/]: [yellow]{items['error']}[/]")
            continue
        out.print(f"[bold]{name}[/]: {len(items)} device(s)")
        for item in items:
            out.print("  " + ", ".join(f"{k}={v}" for k, v in item.items()), highlight=False)


@device_app.command("describe")
def device_describe(
    driver: DriverOpt, profile: ProfileOpt = None, device: DeviceOpt = None, option: OptionOpt = None,
    timeout: TimeoutOpt = 5.0,
) -> None:  # fmt: skip
    """Identity and capabilities of one device."""
    with make_driver(driver, profile, device, option, timeout) as drv:
        out.print_json(json.dumps(drv.describe().as_dict(), default=str))


@device_app.command("get")
def device_get(
    driver: DriverOpt, profile: ProfileOpt = None, device: DeviceOpt = None, option: OptionOpt = None,
    timeout: TimeoutOpt = 5.0,
) -> None:  # fmt: skip
    """Read every parameter back from the device."""
    with make_driver(driver, profile, device, option, timeout) as drv:
        out.print_json(json.dumps(drv.get_params()))


@device_app.command("set")
def device_set(
    driver: DriverOpt,
    sets: Annotated[list[str] | None, typer.Option("--set", help="NAME=VALUE, repeatable.")] = None,
    params_file: Annotated[Path | None, typer.Option("--params", help='JSON file {"name": value}.')] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Read back what was written.")] = True,
    profile: ProfileOpt = None, device: DeviceOpt = None, option: OptionOpt = None, timeout: TimeoutOpt = 5.0,
) -> None:  # fmt: skip
    """Validate, snap to the grid, write (only what changed), read back. Prints what the device holds."""

    requested: dict[str, object] = {}
    if params_file is not None:
        requested.update(read_params_file(params_file))
    requested.update(parse_sets(sets or []))
    if not requested:
        raise InputError("nothing to set: give --set NAME=VALUE or --params FILE")
    drv = make_driver(driver, profile, device, option, timeout)
    _, warnings = drv.space.validate(requested, partial=True)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    with drv:
        out.print_json(json.dumps(drv.set_params(requested, verify=verify)))


@device_app.command("capture")
def device_capture(
    driver: DriverOpt,
    out_path: Annotated[Path, typer.Option("--out", help="PNG of the processed frame.")],
    raw: Annotated[Path | None, typer.Option("--raw", help="RAW file (or sRGB to unprocess) to inject.")] = None,
    profile: ProfileOpt = None, device: DeviceOpt = None, option: OptionOpt = None, timeout: TimeoutOpt = 10.0,
) -> None:  # fmt: skip
    """Capture one settled frame; write it as PNG and its metadata beside it as JSON."""
    from PIL import Image

    from hil_tune.inputs import load_input
    from hil_tune.outputs import check_output

    check_output(out_path, "--out")
    drv = make_driver(driver, profile, device, option, timeout)
    frame_in = load_input(raw, tone=drv.profile.pipeline.tone, gamma=drv.profile.pipeline.gamma) if raw else None
    with drv:
        frame = drv.capture(frame_in)
        info = drv.describe().as_dict()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame.image).save(out_path)
    meta = {"device": info, "params": frame.params, "param_seq": frame.param_seq, "frame_id": frame.frame_id,
            "host_time_ns": frame.host_time_ns, "device_time_ns": frame.device_time_ns,
            "shape": list(frame.image.shape), "cfa": frame.cfa}  # fmt: skip
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    out.print(f"wrote {out_path} ({frame.image.shape[1]}x{frame.image.shape[0]}, frame {frame.frame_id})")


@emulate_app.command("serial")
def emulate_serial(
    profile: Annotated[str, typer.Option("--profile", help="Register-map profile.")] = "emulated-board",
    link: Annotated[Path | None, typer.Option("--link", help="Keep a stable symlink to the pty here.")] = None,
    serial_number: Annotated[str, typer.Option("--serial-number")] = "HT-0001",
    settle: Annotated[int | None, typer.Option("--settle", help="Settle frames (default: the profile's).")] = None,
    tags: Annotated[bool, typer.Option("--tags/--no-tags", help="Tag frames with their setting.")] = False,
    sensor: Annotated[str, typer.Option(help="Bundled image name or file the sensor sees.")] = "astronaut",
    sensor_size: Annotated[int, typer.Option(help="Sensor crop (pixels a side).")] = 64,
    faults: Annotated[str, typer.Option("--faults", help="Random faults, e.g. drop=0.05,corrupt=0.02,seed=1")] = "",
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C).")] = 0.0,
) -> None:
    """Run the emulated ISP board on a pseudo-terminal and print its path; open it with --driver serial."""
    import cv2

    from hil_tune.drivers.emulated.firmware import BoardFirmware
    from hil_tune.drivers.emulated.serial_pty import Faults, SerialEmulator

    # A board's ISP runs on its own silicon: the emulator keeps to one host core, so that it takes
    # from the host software under test (a live loop, a capture) as little as hardware would.
    cv2.setNumThreads(1)
    try:
        fault_plan = Faults.parse(faults)
    except ValueError as e:
        raise InputError(f"--faults: {e}") from None
    firmware = BoardFirmware(
        profile, serial_number=serial_number, settle_frames=settle, frame_tags=tags, sensor=sensor,
        sensor_size=sensor_size,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with SerialEmulator(firmware, link=link, faults=fault_plan) as emu:
        out.print(emu.path, highlight=False)
        if link is not None:
            out.print(f"link: {link}", highlight=False)
        out.file.flush()
        end = time.monotonic() + seconds if seconds > 0 else None
        while not stop.is_set() and (end is None or time.monotonic() < end):
            stop.wait(0.1)
        err.print(f"emulator stopped after {emu.requests} requests")
