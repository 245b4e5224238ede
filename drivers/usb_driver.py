"""`usb`: a register board on USB, through pyusb.

Requests and replies of docs/protocol.md travel in vendor control transfers (the transfer frames
them, so no COBS), frames come in on bulk endpoint 0x81. The board is found by VID/PID from the
profile and by serial number, so after an unplug it is found again wherever it re-enumerates.
"""

from __future__ import annotations

import contextlib
import errno
import random
from typing import Any

from hil_tune.drivers import protocol as p
from hil_tune.drivers.base import DEFAULT_TIMEOUT_S, Deadline
from hil_tune.drivers.errors import DeviceDisconnected, DeviceNotFound, DeviceTimeout, ProtocolError
from hil_tune.drivers.registers import RegisterDriver
from hil_tune.profiles import Profile

REQ_SUBMIT, REQ_RESULT, EP_FRAMES = 0x01, 0x02, 0x81
_GONE = {errno.ENODEV, errno.ENOENT, errno.EIO}


def _map_usb_error(err: Exception, what: str) -> Exception:
    import usb.core

    if isinstance(err, usb.core.USBTimeoutError):
        return DeviceTimeout(f"usb: {what}: timed out")
    if getattr(err, "errno", None) in _GONE or "No such device" in str(err):
        return DeviceDisconnected(f"usb: {what}: device gone ({err})")
    return ProtocolError(f"usb: {what}: {err}")


class UsbLink:
    def __init__(self, dev: Any, *, retries: int = 3, attempt_timeout: float = 0.5) -> None:
        self.dev, self.retries, self.attempt_timeout = dev, retries, attempt_timeout
        self._seq = random.randrange(0x10000)
        self.tx_bytes = self.rx_bytes = 0

    def transact(
        self, cmd: p.Cmd, payload: bytes, deadline: Deadline, attempt_timeout: float | None = None
    ) -> p.Packet:
        import usb.core

        self._seq = (self._seq + 1) & 0xFFFF
        body = p.encode_body(p.Packet(self._seq, cmd, payload))
        why = "no reply"
        for _attempt in range(self.retries + 1):
            left = deadline.check(f"usb: {cmd.name}")
            ms = max(1, int(1000 * min(attempt_timeout or self.attempt_timeout, left)))
            try:
                self.dev.ctrl_transfer(0x40, REQ_SUBMIT, 0, 0, body, timeout=ms)
                self.tx_bytes += len(body)
                raw = bytes(self.dev.ctrl_transfer(0xC0, REQ_RESULT, 0, 0, p.MAX_BODY, timeout=ms))
            except usb.core.USBError as err:
                mapped = _map_usb_error(err, cmd.name)
                if isinstance(mapped, DeviceTimeout):
                    why = "timed out"
                    continue
                raise mapped from None
            self.rx_bytes += len(raw)
            try:
                reply = p.decode_body(raw)
            except ProtocolError as err:
                why = str(err)
                continue
            if reply.seq != self._seq or reply.code in (p.Status.BAD_CRC, p.Status.BUSY):
                why = "stale or refused reply"
                continue
            return reply
        raise DeviceTimeout(f"usb: {cmd.name} failed after {self.retries + 1} attempts ({why})")

    def read_frame(self, header: p.FrameHeader, deadline: Deadline) -> tuple[bytes, bytes]:
        import usb.core

        total = header.image_len + header.raw_len
        buf = bytearray()
        while len(buf) < total:
            ms = max(1, int(1000 * deadline.check("usb: frame read-out")))
            try:
                buf += bytes(self.dev.read(EP_FRAMES, total - len(buf), timeout=ms))
            except usb.core.USBError as err:
                raise _map_usb_error(err, "frame read-out") from None
        self.rx_bytes += total
        return bytes(buf[: header.image_len]), bytes(buf[header.image_len :])

    def close(self) -> None:
        import usb.util

        with contextlib.suppress(Exception):
            usb.util.dispose_resources(self.dev)


class UsbDriver(RegisterDriver):
    name = "usb"
    transport = "usb"

    def __init__(
        self,
        profile: Profile | str = "emulated-board",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        device: str | None = None,
        serial_number: str | None = None,
        backend: Any = None,
        retries: int = 3,
        attempt_timeout: float = 0.5,
    ) -> None:
        # For USB the selector is the serial number: bus addresses change on every replug.
        super().__init__(profile, timeout=timeout, device=device, serial_number=serial_number or device,
                         retries=retries, attempt_timeout=attempt_timeout)  # fmt: skip
        self.backend = backend

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import usb.backend.libusb1
        except ImportError:
            return False, "pyusb is not installed"
        if usb.backend.libusb1.get_backend() is None:
            return False, "libusb-1.0 is not installed (apt install libusb-1.0-0)"
        return True, "ready"

    def _find(self, backend: Any) -> list[Any]:
        import usb.core

        assert self.profile.device is not None
        dev = self.profile.device
        try:
            found = usb.core.find(find_all=True, idVendor=dev.vendor_id, idProduct=dev.product_id, backend=backend)
            return list(found or [])
        except usb.core.NoBackendError:
            raise DeviceNotFound("usb: no libusb backend (apt install libusb-1.0-0)") from None

    def _open_link(self, deadline: Deadline) -> UsbLink:
        import usb.core

        assert self.profile.device is not None
        candidates = self._find(self.backend)
        for dev in candidates:
            try:
                serial = dev.serial_number
            except (usb.core.USBError, ValueError):
                continue
            if self.serial_number is None or serial == self.serial_number:
                try:
                    dev.set_configuration()
                except usb.core.USBError as err:
                    raise _map_usb_error(err, "set configuration") from None
                return UsbLink(dev, retries=self.retries, attempt_timeout=self.attempt_timeout)
        vidpid = f"{self.profile.device.vendor_id:04x}:{self.profile.device.product_id:04x}"
        wanted = f" with serial {self.serial_number!r}" if self.serial_number else ""
        raise DeviceNotFound(f"usb: no device {vidpid}{wanted} ({len(candidates)} with that VID:PID)")

    def reset(self) -> None:
        """USB port reset, then find the board again (it re-enumerates)."""
        import usb.core

        link = self._link
        if link is not None:
            # A device that is already gone re-enumerates anyway.
            with contextlib.suppress(usb.core.USBError):
                link.dev.reset()  # type: ignore[attr-defined]
        self.reconnect()

    @classmethod
    def discover(cls, timeout: float = DEFAULT_TIMEOUT_S, backend: Any = None, **_: Any) -> list[dict[str, Any]]:
        from hil_tune.profiles import bundled_names, load_profile

        out: list[dict[str, Any]] = []
        for name in bundled_names():
            prof = load_profile(name)
            if prof.device is None or prof.device.control != "registers" or prof.device.vendor_id is None:
                continue
            drv = cls(prof, backend=backend)
            for dev in drv._find(backend):
                out.append({"selector": _serial_or_none(dev), "profile": name, "bus": dev.bus, "address": dev.address,
                            "vendor_id": dev.idVendor, "product_id": dev.idProduct})  # fmt: skip
        return out


def _serial_or_none(dev: Any) -> str | None:
    try:
        return dev.serial_number
    except Exception:
        return None
