"""Drivers for boards with a register map (serial and USB): everything above the transport.

A `Link` moves request and reply packets of docs/protocol.md and frame bytes; this module turns
parameters into fixed-point register writes and frames back into arrays. Every value is checked
against the datasheet (the profile's map) on the host, so an out-of-range write cannot be formed.
"""

from __future__ import annotations

import json
import zlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hil_tune.drivers import protocol as p
from hil_tune.drivers.base import (
    DEFAULT_TIMEOUT_S,
    Deadline,
    DeviceInfo,
    Driver,
    Grab,
    scale_from_device,
    scale_to_device,
)
from hil_tune.drivers.errors import DeviceNotFound, ParameterRejected, ProtocolError
from hil_tune.errors import ParameterError
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame


@dataclass(frozen=True)
class Register:
    """One register of the datasheet: which parameter, its fixed-point scale and legal values."""

    name: str
    scale: float
    lo: int
    hi: int
    step: int  # legal values are lo + k * step
    choices: tuple[str, ...] | None


def register_map(profile: Profile) -> dict[int, Register]:
    if profile.device is None or profile.device.control != "registers":
        raise ValueError(f"profile {profile.name} has no register map")
    regs: dict[int, Register] = {}
    for spec in profile.space:
        m = profile.device.map[spec.name]
        assert m.addr is not None
        if spec.kind == "choice":
            assert spec.choices is not None
            regs[m.addr] = Register(spec.name, 1.0, 0, len(spec.choices) - 1, 1, spec.choices)
        else:
            assert spec.min is not None and spec.max is not None and spec.step is not None
            lo, hi, step = (round(v * m.scale) for v in (spec.min, spec.max, spec.step))
            regs[m.addr] = Register(spec.name, m.scale, lo, hi, step, None)
    return regs


class Link(Protocol):
    """A transport to a register board; counts bytes so benchmarks can report them."""

    tx_bytes: int
    rx_bytes: int

    def transact(
        self, cmd: p.Cmd, payload: bytes, deadline: Deadline, attempt_timeout: float | None = None
    ) -> p.Packet: ...

    def read_frame(self, header: p.FrameHeader, deadline: Deadline) -> tuple[bytes, bytes]: ...

    def close(self) -> None: ...


def require_ok(reply: p.Packet, what: str) -> p.Packet:
    """Map a reply status to the error family (BUSY and BAD_CRC are retried by the link itself)."""
    if reply.code == p.Status.OK:
        return reply
    if reply.code == p.Status.OUT_OF_RANGE:
        raise ParameterRejected(f"{what}: the device refused a value as out of range")
    try:
        name = p.Status(reply.code).name
    except ValueError:
        name = f"unknown status {reply.code:#04x}"
    raise ProtocolError(f"{what}: device answered {name}")


RAW_CHUNK = 2048
CAPTURE_ATTEMPT_S = 3.0


class RegisterDriver(Driver):
    """Shared logic of `serial` and `usb`; subclasses open a Link and find the device."""

    def __init__(
        self,
        profile: Profile | str = "emulated-board",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        device: str | None = None,
        serial_number: str | None = None,
        retries: int = 3,
        attempt_timeout: float = 0.5,
    ) -> None:
        super().__init__(profile, timeout=timeout)
        self.retries, self.attempt_timeout = retries, attempt_timeout  # per request, on both transports
        if self.profile.device is None or self.profile.device.control != "registers":
            raise DeviceNotFound(f"profile {self.profile.name} has no register map ([device] control = 'registers')")
        self.selector = device
        self.serial_number = serial_number
        self.regs = register_map(self.profile)
        self._addr_of = {r.name: a for a, r in self.regs.items()}
        self._link: Link | None = None
        self._identity: dict[str, Any] = {}
        self._uploaded_crc: int | None = None

    @abstractmethod
    def _open_link(self, deadline: Deadline) -> Link: ...

    @property
    def link(self) -> Link:
        if self._link is None:
            raise ProtocolError(f"{self.name}: link is not open")
        return self._link

    def link_bytes(self) -> int | None:
        link = self._link
        return None if link is None else int(link.tx_bytes + link.rx_bytes)

    def _connect(self, deadline: Deadline) -> None:
        self._link = self._open_link(deadline)
        try:
            self._identity = hello(self._link, deadline)
            if self.serial_number and self._identity.get("serial_number") != self.serial_number:
                raise DeviceNotFound(
                    f"{self.name}: device answers as serial {self._identity.get('serial_number')!r}, "
                    f"expected {self.serial_number!r}"
                )
            if self._identity.get("profile") != self.profile.name:
                raise ProtocolError(
                    f"{self.name}: the board's register map is {self._identity.get('profile')!r}, "
                    f"but profile {self.profile.name!r} was loaded"
                )
            board_map = self._identity.get("map_sha256")
            if board_map is not None and board_map != self.profile.device_sha256:
                raise ProtocolError(
                    f"{self.name}: profile {self.profile.name!r} does not match the board's own "
                    f"(parameters or register map differ: board {str(board_map)[:12]}, "
                    f"profile {self.profile.device_sha256[:12]}); was the profile edited?"
                )
        except BaseException:
            self._link.close()
            self._link = None
            raise
        self._uploaded_crc = None

    def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _info(self) -> DeviceInfo:
        ident = self._identity
        assert self.profile.device is not None
        return DeviceInfo(
            driver=self.name,
            transport=self.transport,
            vendor=str(ident.get("vendor", "")),
            model=str(ident.get("model", "")),
            serial_number=str(ident.get("serial_number", "")),
            firmware=str(ident.get("firmware", "")),
            raw_injection=bool(ident.get("raw_injection", False)),
            live_sensor=bool(ident.get("live_sensor", False)),
            frame_tags=bool(ident.get("frame_tags", False)),
            settle_frames=int(ident.get("settle_frames", self.profile.device.settle_frames)),
            extra={"protocol": ident.get("protocol"), "selector": self.selector},
        )

    def _decode(self, addrs: list[int], values: list[int]) -> ParamDict:
        out: ParamDict = {}
        for addr, raw in zip(addrs, values, strict=True):
            reg = self.regs[addr]
            try:
                value = scale_from_device(raw, reg.choices, reg.scale)
                out[reg.name] = self.space[reg.name].quantize(value)[0]
            except ParameterError as err:
                raise ProtocolError(f"{self.name}: register {addr:#06x} ({reg.name}) reads {raw}: {err}") from None
        return out

    def _read(self, deadline: Deadline) -> ParamDict:
        addrs = list(self.regs)
        reply = require_ok(self.link.transact(p.Cmd.READ, p.read_request(addrs), deadline), "read")
        return self._decode(addrs, p.parse_values(reply.payload, len(addrs)))

    def encode_write(self, values: ParamDict) -> list[tuple[int, int]]:
        """(address, fixed-point value) pairs; refuses anything outside a register's legal values."""
        entries = []
        for name, value in values.items():
            addr = self._addr_of[name]
            reg = self.regs[addr]
            raw = scale_to_device(value, reg.choices, reg.scale)
            if not (reg.lo <= raw <= reg.hi and (raw - reg.lo) % reg.step == 0):
                raise ParameterRejected(f"{name}: {value} encodes to {raw}, not a legal value of register {addr:#06x}")
            entries.append((addr, raw))
        return entries

    def _write(self, values: ParamDict, deadline: Deadline) -> tuple[int | None, ParamDict | None]:
        entries = self.encode_write(values)
        payload = p.write_request(entries, commit=True)
        reply = require_ok(self.link.transact(p.Cmd.WRITE, payload, deadline), "write")
        tag, readback = p.parse_write_reply(reply.payload, len(entries))
        return (None if tag == p.NO_TAG else tag), self._decode([a for a, _ in entries], readback)

    def _upload(self, raw: RawFrame, deadline: Deadline) -> None:
        mosaic = np.asarray(raw.mosaic)
        if not np.issubdtype(mosaic.dtype, np.integer) or mosaic.min() < 0 or mosaic.max() > 0xFFFF:
            raise ParameterRejected(f"{self.name}: RAW injection takes 16-bit integer mosaics")
        data = np.ascontiguousarray(mosaic, dtype="<u2").tobytes()
        crc = zlib.crc32(data)
        if crc == self._uploaded_crc:
            return  # the board still holds it (settle loops capture the same RAW again)
        h, w = raw.shape
        black = tuple(round(b) for b in raw.black_level)
        begin = p.raw_begin_request(h, w, raw.cfa, black, round(raw.white_level))  # type: ignore[arg-type]
        require_ok(self.link.transact(p.Cmd.RAW_BEGIN, begin, deadline), "RAW upload")
        for off in range(0, len(data), RAW_CHUNK):
            chunk = p.raw_chunk_request(off, data[off : off + RAW_CHUNK])
            require_ok(self.link.transact(p.Cmd.RAW_CHUNK, chunk, deadline), "RAW upload")
        require_ok(self.link.transact(p.Cmd.RAW_END, p.crc_payload(data), deadline), "RAW upload")
        self._uploaded_crc = crc

    def _levels(self, raw: RawFrame | None) -> tuple[tuple[float, float, float, float], float] | None:
        if raw is not None:
            return raw.black_level, raw.white_level
        black, white = self._identity.get("sensor_black"), self._identity.get("sensor_white")
        if black is None or white is None:
            return None
        return (float(black[0]), float(black[1]), float(black[2]), float(black[3])), float(white)

    def _grab(self, raw: RawFrame | None, deadline: Deadline) -> Grab:
        if raw is not None:
            self._upload(raw, deadline)
        flags = bytes([p.CAPTURE_INJECTED if raw is not None else 0])
        # A frame takes the board a frame time (or, emulated, an ISP run): wait for it, not a retry.
        reply = self.link.transact(p.Cmd.CAPTURE, flags, deadline, attempt_timeout=CAPTURE_ATTEMPT_S)
        require_ok(reply, "capture")
        header = p.FrameHeader.unpack(reply.payload)
        image_bytes, raw_bytes = self.link.read_frame(header, deadline)
        image = np.frombuffer(image_bytes, dtype=np.uint8).reshape(header.height, header.width, 3)
        mosaic = None
        if header.raw_len:
            if header.raw_len != header.height * header.width * 2:
                raise ProtocolError(f"{self.name}: RAW of {header.raw_len} bytes for {header.height}x{header.width}")
            mosaic = np.frombuffer(raw_bytes, dtype="<u2").reshape(header.height, header.width).astype(np.uint16)
        return Grab(
            image=image,
            frame_id=header.frame_id,
            device_tag=None if header.tag == p.NO_TAG else header.tag,
            device_time_ns=header.device_time_us * 1000,
            raw=mosaic,
            cfa=header.cfa if header.raw_len else None,
            raw_levels=self._levels(raw) if header.raw_len else None,
        )


def hello(link: Link, deadline: Deadline) -> dict[str, Any]:
    reply = require_ok(link.transact(p.Cmd.HELLO, b"", deadline), "hello")
    try:
        ident = json.loads(reply.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("hello: the identity is not JSON") from None
    if not isinstance(ident, dict) or ident.get("protocol") != p.VERSION:
        raise ProtocolError(
            f"hello: device speaks protocol {ident.get('protocol') if isinstance(ident, dict) else '?'}"
        )
    return ident


def read_frame_chunked(
    link: Link, header: p.FrameHeader, deadline: Deadline, chunk: int = p.MAX_PAYLOAD
) -> tuple[bytes, bytes]:
    """Frame bytes by READ_FRAME requests (serial): each chunk is its own checked, retried packet."""
    out = []
    for which, length in ((p.FRAME_IMAGE, header.image_len), (p.FRAME_RAW, header.raw_len)):
        buf = bytearray()
        while len(buf) < length:
            req = p.read_frame_request(which, len(buf), min(chunk, length - len(buf)))
            data = require_ok(link.transact(p.Cmd.READ_FRAME, req, deadline), "frame read-out").payload
            if not data:
                raise ProtocolError("frame read-out: the device returned no bytes")
            buf += data
        out.append(bytes(buf[:length]))
    return out[0], out[1]
