"""The serial device emulator: the board's firmware behind a pseudo-terminal.

pyserial opens the pty's path exactly as it opens a USB-serial adapter, so the driver under test
is the real one. Faults are injected here, on the device side of the wire, never by patching the
driver: requests or replies dropped or corrupted, garbage bytes, delays, silence, and an unplug
(the pty disappears, as /dev/ttyUSB0 does) followed by a replug under the same stable symlink
that the udev rules give a real adapter.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from hil_tune.drivers import protocol as p
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.errors import HilTuneError


@dataclass
class Faults:
    """Faults to inject. Counters fire on the next N packets; rates fire at random (seeded)."""

    drop_requests: int = 0  # lost on the way in: not executed, no reply
    drop_replies: int = 0  # executed, reply lost: the host must retry without a double write
    corrupt_requests: int = 0  # one bit flipped on the way in: the board answers BAD_CRC
    corrupt_replies: int = 0  # one bit flipped on the way out: the host's CRC check must catch it
    truncate_replies: int = 0  # the reply stops half-way (bytes dropped)
    garbage: bytes = b""  # sent once before the next reply
    delay_s: float = 0.0  # before every reply
    silent: bool = False  # answers nothing until cleared
    unplug_after: int | None = None  # unplug after executing this many more requests (mid-push)
    p_drop: float = 0.0
    p_corrupt: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """'drop=0.05,corrupt=0.02,delay=0.01,seed=3' (rates, seconds) for the CLI."""
        out = cls()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition("=")
            if key == "drop":
                out.p_drop = float(value)
            elif key == "corrupt":
                out.p_corrupt = float(value)
            elif key == "delay":
                out.delay_s = float(value)
            elif key == "seed":
                out.seed = int(value)
                out.rng = random.Random(out.seed)
            else:
                raise ValueError(f"unknown fault {key!r} (drop, corrupt, delay, seed)")
        return out


def _flip(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


class SerialEmulator:
    """Runs until `stop()`; `path` is the pty to open, `link` the stable symlink when asked for."""

    def __init__(
        self, firmware: BoardFirmware, *, link: Path | str | None = None, faults: Faults | None = None
    ) -> None:
        self.firmware = firmware
        self.link = Path(link) if link is not None else None
        self.faults = faults or Faults()
        self.path = ""
        self.requests = 0
        self.plugged = False
        self._fds: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unplug_pending = False
        self._plug_lock = threading.RLock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_link(self) -> None:
        """The link may only replace a symlink (ours from an earlier run, or a dangling one): never a
        user's file or folder, which `replace` would destroy and the unplug would then delete."""
        assert self.link is not None
        if self.link.exists() and not self.link.is_symlink():
            kind = "folder" if self.link.is_dir() else "file"
            raise HilTuneError(f"--link {self.link}: a {kind} is there; give a path that is free or a symlink")
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.exists() and not tmp.is_symlink():
            raise HilTuneError(f"--link {self.link}: {tmp} is in the way (a file or folder, not our symlink)")

    def start(self) -> str:
        if self.link is not None:
            self._check_link()
        master, slave = os.openpty()
        tty.setraw(slave)
        self._fds = (master, slave)
        self.path = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.path)
            tmp.replace(self.link)  # atomic, like udev updating /dev/hil-tune/...
        self._stop.clear()
        self.plugged = True
        self._thread = threading.Thread(target=self._serve, args=(master,), name="hil-tune-emulator", daemon=True)
        self._thread.start()
        return self.path

    def unplug(self) -> None:
        """The adapter vanishes: the host's open port starts failing and the symlink goes."""
        with self._plug_lock:  # a replug waits for an unplug in progress (fault injection runs one)
            self.plugged = False
            self._stop.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=2)
            gone = self.path
            self._close_fds()
            if self.link is not None:
                with contextlib.suppress(OSError):
                    if os.readlink(self.link) == gone:  # never remove the link of a newer plug-in
                        self.link.unlink()

    def replug(self) -> str:
        """Back on the bus (a new pty, the same symlink); the firmware keeps its registers."""
        self.unplug()
        with self._plug_lock:
            return self.start()

    def stop(self) -> None:
        self.unplug()

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, None
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve(self, master: int) -> None:
        decoder = p.StreamDecoder()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 65536)
            except OSError:
                return
            for body in decoder.feed_bodies(data):
                reply = self._answer(body)
                if self._unplug_pending:
                    self._unplug_pending = False
                    threading.Thread(target=self.unplug, daemon=True).start()
                    return
                if reply is None:
                    continue
                try:
                    os.write(master, reply)
                except OSError:
                    return

    def _answer(self, body: bytes) -> bytes | None:
        f = self.faults
        if f.silent:
            return None
        if f.drop_requests > 0:
            f.drop_requests -= 1
            return None
        if f.p_drop and f.rng.random() < f.p_drop:
            return None
        if f.corrupt_requests > 0:
            f.corrupt_requests -= 1
            body = _flip(body, f.rng)
        self.requests += 1
        reply = self.firmware.handle(body)
        if f.unplug_after is not None:
            f.unplug_after -= 1
            if f.unplug_after <= 0:
                f.unplug_after = None
                self._unplug_pending = True  # executed, then the cable came out before the reply left
                return None
        if f.drop_replies > 0:
            f.drop_replies -= 1
            return None
        if f.corrupt_replies > 0 or (f.p_corrupt and f.rng.random() < f.p_corrupt):
            f.corrupt_replies = max(0, f.corrupt_replies - 1)
            reply = _flip(reply, f.rng)
        wire = p.frame_packet_body(reply)
        if f.truncate_replies > 0:
            f.truncate_replies -= 1
            wire = wire[: len(wire) // 2]
        if f.garbage:
            wire, f.garbage = f.garbage + wire, b""
        if f.delay_s:
            time.sleep(f.delay_s)
        return wire
