"""`serial`: a register board behind a serial port (USB-serial adapter), through pyserial.

Retries re-send the *same* sequence number, and the board answers a repeated request from its
reply cache without executing it again, so a lost reply can never make a write happen twice.
"""

from __future__ import annotations

import contextlib
import glob
import random
import termios
import time
from typing import Any

from hil_tune.drivers import protocol as p
from hil_tune.drivers.base import DEFAULT_TIMEOUT_S, Deadline
from hil_tune.drivers.errors import DeviceDisconnected, DeviceError, DeviceNotFound, DeviceTimeout
from hil_tune.drivers.registers import RegisterDriver, hello, read_frame_chunked
from hil_tune.profiles import Profile

UDEV_GLOB = "/dev/hil-tune/*"


class SerialLink:
    def __init__(self, port: str, *, baudrate: int = 921600, retries: int = 3, attempt_timeout: float = 0.5) -> None:
        import serial

        # termios.error escapes pyserial when the pty or adapter vanishes mid-call (tcdrain, tcflush).
        self._serial_error = (serial.SerialException, termios.error)
        try:
            self._port = serial.Serial(port, baudrate=baudrate, timeout=0.005, write_timeout=1.0, exclusive=True)
        except (serial.SerialException, termios.error, OSError) as err:
            raise DeviceNotFound(f"serial: cannot open {port}: {err}") from None
        self.port, self.retries, self.attempt_timeout = port, retries, attempt_timeout
        self._decoder = p.StreamDecoder()
        self._seq = random.randrange(0x10000)  # a fresh session never matches the board's reply cache
        self.tx_bytes = self.rx_bytes = 0
        self.retransmits = 0

    def _send(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except (*self._serial_error, OSError) as err:
            raise DeviceDisconnected(f"serial {self.port}: write failed ({err})") from None
        self.tx_bytes += len(data)

    def _await(self, seq: int, timeout: float) -> p.Packet | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (*self._serial_error, OSError) as err:
                raise DeviceDisconnected(f"serial {self.port}: read failed ({err})") from None
            if not data:
                continue
            self.rx_bytes += len(data)
            for packet in self._decoder.feed(data):
                if packet.seq == seq:
                    return packet  # replies to earlier, abandoned attempts are dropped here
        return None

    def transact(
        self, cmd: p.Cmd, payload: bytes, deadline: Deadline, attempt_timeout: float | None = None
    ) -> p.Packet:
        self._seq = (self._seq + 1) & 0xFFFF
        wire = p.frame_packet(p.Packet(self._seq, cmd, payload))
        why = "no reply"
        for attempt in range(self.retries + 1):
            left = deadline.check(f"serial {self.port}: {cmd.name}")
            # A leading delimiter on retries ends whatever half-frame the board may be holding.
            self._send(wire if attempt == 0 else b"\x00" + wire)
            if attempt:
                self.retransmits += 1
            reply = self._await(self._seq, min(attempt_timeout or self.attempt_timeout, left))
            if reply is None:
                why = "no reply"
            elif reply.code == p.Status.BAD_CRC:
                why = "the board saw a corrupt request"
            elif reply.code == p.Status.BUSY:
                why = "the board stayed busy"
                time.sleep(min(0.005 * 2**attempt, max(deadline.left(), 0)))
            else:
                return reply
        raise DeviceTimeout(f"serial {self.port}: {cmd.name} failed after {self.retries + 1} attempts ({why})")

    def read_frame(self, header: p.FrameHeader, deadline: Deadline) -> tuple[bytes, bytes]:
        return read_frame_chunked(self, header, deadline)

    def close(self) -> None:
        with contextlib.suppress(*self._serial_error, OSError):
            self._port.close()


class SerialDriver(RegisterDriver):
    name = "serial"
    transport = "serial"

    def __init__(
        self,
        profile: Profile | str = "emulated-board",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        device: str | None = None,
        serial_number: str | None = None,
        baudrate: int = 921600,
        retries: int = 3,
        attempt_timeout: float = 0.5,
    ) -> None:
        super().__init__(profile, timeout=timeout, device=device, serial_number=serial_number,
                         retries=retries, attempt_timeout=attempt_timeout)  # fmt: skip
        self.baudrate = baudrate

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import serial  # noqa: F401
        except ImportError:
            return False, "pyserial is not installed"
        return True, "ready"

    def _link_to(self, port: str) -> SerialLink:
        return SerialLink(port, baudrate=self.baudrate, retries=self.retries, attempt_timeout=self.attempt_timeout)

    def _open_link(self, deadline: Deadline) -> SerialLink:
        if self.selector:
            return self._link_to(self.selector)
        if self.serial_number:
            for found in self.discover(timeout=min(deadline.left(), 1.0)):
                if found.get("serial_number") == self.serial_number:
                    return self._link_to(str(found["selector"]))
            raise DeviceNotFound(f"serial: no board with serial number {self.serial_number!r} on {UDEV_GLOB}")
        raise DeviceNotFound("serial: give the port (--device /dev/ttyUSB0 or /dev/hil-tune/...) or a serial number")

    @classmethod
    def discover(
        cls, timeout: float = DEFAULT_TIMEOUT_S, ports: list[str] | None = None, **_: Any
    ) -> list[dict[str, Any]]:
        """Ask HELLO on the udev symlinks (and any ports given). Other ports are listed, not probed:
        bytes sent to an unknown serial device could be a command to something else."""
        found: list[dict[str, Any]] = []
        for port in [*(ports or []), *sorted(glob.glob(UDEV_GLOB))]:
            try:
                link = SerialLink(port, retries=0, attempt_timeout=min(timeout, 0.3))
            except DeviceError:
                continue
            try:
                ident = hello(link, Deadline(min(timeout, 0.3) + 0.05))
                found.append({"selector": port, **ident})
            except DeviceError as err:
                found.append({"selector": port, "error": str(err)})
            finally:
                link.close()
        try:
            from serial.tools import list_ports

            for info in list_ports.comports():
                if info.device not in {f["selector"] for f in found}:
                    found.append({"selector": info.device, "probed": False, "vid": info.vid, "pid": info.pid,
                                  "serial_number": info.serial_number, "description": info.description})  # fmt: skip
        except ImportError:
            pass
        return found
