"""Pin a register driver's exact traffic: a scripted board for plug-in and driver tests.

Why: the contract suite checks what a driver does (values land, frames come back); it cannot say
that a delta push sends one WRITE of two registers and not a READ-modify-WRITE of twenty, or that
the bytes of a request are the ones the firmware's documentation gives. pymeasure's
`expected_protocol` pins an instrument's command strings the same way. Here the script is a list
of exchanges: the command, the request payload byte for byte, the reply payload; the packet
framing (sequence number, COBS, CRC) is the link's and is tested with the protocol itself.

    from hil_tune.drivers import protocol as p
    from hil_tune.drivers.serial_driver import SerialDriver
    from hil_tune.testing.protocol import expected_protocol

    with expected_protocol(SerialDriver, "emulated-board", [
        (p.Cmd.WRITE, p.write_request([(0x0114, 150)], commit=True), p.write_reply(p.NO_TAG, [150])),
    ]) as drv:
        drv.set_params({"gain-r": 1.5})

The driver is opened against the script: its HELLO is answered with an identity that matches the
profile, and its first READ of every register with `holding` (the profile's defaults unless
given). Leaving the block checks that every exchange was used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hil_tune.drivers import protocol as p
from hil_tune.drivers.base import Deadline, scale_to_device
from hil_tune.drivers.registers import RegisterDriver, read_frame_chunked, register_map
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile, load_profile

Exchange = tuple[p.Cmd, bytes, bytes] | tuple[p.Cmd, bytes, bytes, p.Status]


class ScriptedLink:
    """A link that plays a script: every request must be the next exchange's, byte for byte."""

    def __init__(self, script: Sequence[Exchange]) -> None:
        self.script = list(script)
        self.used = 0
        self.tx_bytes = self.rx_bytes = 0
        self.closed = False

    def transact(
        self, cmd: p.Cmd, payload: bytes, deadline: Deadline, attempt_timeout: float | None = None
    ) -> p.Packet:
        step = self.used
        if step >= len(self.script):
            raise AssertionError(f"exchange {step}: unexpected {cmd.name} {payload.hex()} after the end of the script")
        want_cmd, want, reply, *status = self.script[step]
        if (cmd, payload) != (want_cmd, want):
            raise AssertionError(
                f"exchange {step}: expected {want_cmd.name} {want.hex() or '(empty)'}, "
                f"the driver sent {cmd.name} {payload.hex() or '(empty)'}"
            )
        self.used += 1
        self.tx_bytes += len(payload)
        self.rx_bytes += len(reply)
        return p.Packet(step, int(status[0]) if status else p.Status.OK, reply)

    def read_frame(self, header: p.FrameHeader, deadline: Deadline) -> tuple[bytes, bytes]:
        return read_frame_chunked(self, header, deadline)  # as the serial link reads: READ_FRAME exchanges

    def close(self) -> None:
        self.closed = True


def opening(profile: Profile, holding: ParamDict | None = None, **identity: Any) -> list[Exchange]:
    """The HELLO and first READ that opening a register driver on `profile` exchanges."""
    assert profile.device is not None
    ident = {"protocol": p.VERSION, "profile": profile.name, "map_sha256": profile.device_sha256,
             "serial_number": "SCRIPTED", "model": "scripted board", **identity}  # fmt: skip
    values = {**profile.space.defaults(), **(holding or {})}
    regs = register_map(profile)
    raw = [scale_to_device(values[r.name], r.choices, r.scale) for r in regs.values()]
    return [
        (p.Cmd.HELLO, b"", json.dumps(ident).encode()),
        (p.Cmd.READ, p.read_request(list(regs)), p.values_payload(raw)),
    ]


@contextmanager
def expected_protocol(
    driver_cls: type[RegisterDriver],
    profile: Profile | str,
    script: Sequence[Exchange],
    *,
    holding: ParamDict | None = None,
    **options: Any,
) -> Iterator[RegisterDriver]:
    """An open `driver_cls` whose link plays `opening(...)` then `script`; every exchange must be
    used by the end of the block (unless the block raised)."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    link = ScriptedLink([*opening(prof, holding), *script])

    class Scripted(driver_cls):  # type: ignore[valid-type, misc]
        def _open_link(self, deadline: Deadline) -> ScriptedLink:  # type: ignore[override]
            return link

    drv = Scripted(prof, device="SCRIPTED", **options)  # the identity's serial number (usb selects by it)
    drv.open()
    try:
        yield drv
    finally:
        drv.close()
    if link.used != len(link.script):
        left = [f"{c.name} {r.hex()}" for c, r, *_ in link.script[link.used :]]
        raise AssertionError(f"{len(left)} scripted exchange(s) never happened: {', '.join(left)}")
