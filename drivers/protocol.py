"""The hil-tune register protocol, version 1 (specification: docs/protocol.md).

One packet = a 4-byte header, a payload and a CRC-32 of both. On a serial link each packet is
COBS-encoded and ends with a zero byte, so a receiver resynchronises at the next zero after any
garbage; on USB the same packet travels in a control transfer, which frames it already.

Pure functions and one incremental decoder: no I/O here, so the decoder can be fuzzed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from cobs import cobs

from hil_tune.drivers.errors import ProtocolError

VERSION = 1
HEADER = struct.Struct("<BHB")  # version, sequence number, command (request) or status (reply)
CRC = struct.Struct("<I")
MIN_BODY = HEADER.size + CRC.size
MAX_PAYLOAD = 4096
MAX_BODY = HEADER.size + MAX_PAYLOAD + CRC.size
NO_TAG = 0xFFFFFFFF


class Cmd(IntEnum):
    HELLO = 0x01
    READ = 0x02
    WRITE = 0x03
    CAPTURE = 0x04
    READ_FRAME = 0x05
    RAW_BEGIN = 0x06
    RAW_CHUNK = 0x07
    RAW_END = 0x08


class Status(IntEnum):
    OK = 0x00
    BAD_CRC = 0x01
    OUT_OF_RANGE = 0x02
    BUSY = 0x03
    BAD_COMMAND = 0x04
    BAD_ADDRESS = 0x05
    NO_FRAME = 0x06
    BAD_LENGTH = 0x07


WRITE_COMMIT = 0x01  # WRITE flag: copy the shadow registers to the pipeline at the next frame boundary
CAPTURE_INJECTED = 0x01  # CAPTURE flag: process the uploaded RAW instead of the sensor
FRAME_IMAGE, FRAME_RAW = 0, 1


@dataclass(frozen=True)
class Packet:
    seq: int
    code: int  # a Cmd in requests, a Status in replies
    payload: bytes = b""


def encode_body(packet: Packet) -> bytes:
    if len(packet.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(packet.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(VERSION, packet.seq & 0xFFFF, packet.code) + packet.payload
    return head + CRC.pack(zlib.crc32(head))


def decode_body(body: bytes) -> Packet:
    """Check length, CRC and version; raise ProtocolError naming which failed."""
    if not MIN_BODY <= len(body) <= MAX_BODY:
        raise ProtocolError(f"packet of {len(body)} bytes (allowed {MIN_BODY}..{MAX_BODY})")
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    if zlib.crc32(body[: -CRC.size]) != crc:
        raise ProtocolError("bad CRC")
    version, seq, code = HEADER.unpack_from(body)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, expected {VERSION}")
    return Packet(seq, code, body[HEADER.size : -CRC.size])


def frame_packet(packet: Packet) -> bytes:
    """Bytes on a serial wire: COBS-encoded body and the zero delimiter."""
    return frame_packet_body(encode_body(packet))


def frame_packet_body(body: bytes) -> bytes:
    return cobs.encode(body) + b"\x00"


class StreamDecoder:
    """Cuts a byte stream into packets. Garbage, truncated and corrupt packets are counted and
    skipped; a run without a delimiter longer than any valid packet is discarded, so memory stays
    bounded whatever arrives."""

    MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 2

    def __init__(self) -> None:
        self._buf = bytearray()
        self.rejected = 0
        self.last_error = ""

    def feed(self, data: bytes) -> list[Packet]:
        """Checked packets (length, CRC, version) completed by `data`."""
        out: list[Packet] = []
        for body in self.feed_bodies(data):
            try:
                out.append(decode_body(body))
            except ProtocolError as err:
                self._reject(str(err))
        return out

    def feed_bodies(self, data: bytes) -> list[bytes]:
        """COBS-decoded bodies, unchecked: a device answers a corrupt one with BAD_CRC."""
        out: list[bytes] = []
        self._buf += data
        while True:
            end = self._buf.find(0)
            if end < 0:
                if len(self._buf) > self.MAX_ENCODED:
                    self._reject(f"{len(self._buf)} bytes without a delimiter")
                    self._buf.clear()
                return out
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not chunk:
                continue  # an empty frame: delimiters used as a resync preamble
            try:
                out.append(cobs.decode(chunk))
            except cobs.DecodeError as err:
                self._reject(f"framing: {err}")

    def _reject(self, why: str) -> None:
        self.rejected += 1
        self.last_error = why


# -- payloads ---------------------------------------------------------------------------------

_ADDR = struct.Struct("<H")
_VALUE = struct.Struct("<i")
_ENTRY = struct.Struct("<Hi")
_TAG = struct.Struct("<I")
_READ_FRAME = struct.Struct("<BIH")  # which, offset, length
_RAW_BEGIN = struct.Struct("<HH4s4HH")  # height, width, cfa, black per 2x2 site, white
_OFFSET = struct.Struct("<I")


def read_request(addrs: list[int]) -> bytes:
    if not 0 < len(addrs) <= 255:
        raise ValueError("READ takes 1..255 registers")
    return bytes([len(addrs)]) + b"".join(_ADDR.pack(a) for a in addrs)


def parse_read_request(payload: bytes) -> list[int]:
    if not payload or len(payload) != 1 + payload[0] * _ADDR.size:
        raise ProtocolError("READ payload length does not match its count")
    return [_ADDR.unpack_from(payload, 1 + i * _ADDR.size)[0] for i in range(payload[0])]


def values_payload(values: list[int]) -> bytes:
    return b"".join(_VALUE.pack(v) for v in values)


def parse_values(payload: bytes, n: int) -> list[int]:
    if len(payload) != n * _VALUE.size:
        raise ProtocolError(f"expected {n} register values, got {len(payload)} bytes")
    return [_VALUE.unpack_from(payload, i * _VALUE.size)[0] for i in range(n)]


def write_request(entries: list[tuple[int, int]], *, commit: bool) -> bytes:
    if not 0 < len(entries) <= 255:
        raise ValueError("WRITE takes 1..255 registers")
    head = bytes([WRITE_COMMIT if commit else 0, len(entries)])
    return head + b"".join(_ENTRY.pack(a, v) for a, v in entries)


def parse_write_request(payload: bytes) -> tuple[list[tuple[int, int]], bool]:
    if len(payload) < 2 or len(payload) != 2 + payload[1] * _ENTRY.size:
        raise ProtocolError("WRITE payload length does not match its count")
    entries = [_ENTRY.unpack_from(payload, 2 + i * _ENTRY.size) for i in range(payload[1])]
    return [(int(a), int(v)) for a, v in entries], bool(payload[0] & WRITE_COMMIT)


def write_reply(tag: int, readback: list[int]) -> bytes:
    """The tag the new setting's frames will carry, and the registers as they now read."""
    return _TAG.pack(tag) + values_payload(readback)


def parse_write_reply(payload: bytes, n: int) -> tuple[int, list[int]]:
    if len(payload) != _TAG.size + n * _VALUE.size:
        raise ProtocolError(f"WRITE reply of {len(payload)} bytes for {n} registers")
    return _TAG.unpack_from(payload)[0], parse_values(payload[_TAG.size :], n)


@dataclass(frozen=True)
class FrameHeader:
    """CAPTURE's reply: what the frame buffer now holds."""

    frame_id: int
    tag: int
    device_time_us: int
    height: int
    width: int
    image_len: int
    raw_len: int
    cfa: str

    FORMAT = struct.Struct("<IIQHHII4s")

    def pack(self) -> bytes:
        return self.FORMAT.pack(
            self.frame_id, self.tag, self.device_time_us, self.height, self.width,
            self.image_len, self.raw_len, self.cfa.encode("ascii"),
        )  # fmt: skip

    @classmethod
    def unpack(cls, payload: bytes) -> FrameHeader:
        if len(payload) != cls.FORMAT.size:
            raise ProtocolError(f"CAPTURE reply of {len(payload)} bytes, expected {cls.FORMAT.size}")
        f = cls.FORMAT.unpack(payload)
        try:
            cfa = f[7].decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("CAPTURE reply: CFA is not ASCII") from None
        header = cls(*f[:7], cfa=cfa)
        if header.image_len != header.height * header.width * 3:
            raise ProtocolError("CAPTURE reply: image length does not match its size")
        return header


def read_frame_request(which: int, offset: int, length: int) -> bytes:
    return _READ_FRAME.pack(which, offset, length)


def parse_read_frame_request(payload: bytes) -> tuple[int, int, int]:
    if len(payload) != _READ_FRAME.size:
        raise ProtocolError("READ_FRAME payload of the wrong length")
    return _READ_FRAME.unpack(payload)


RawMeta = tuple[int, int, str, tuple[int, int, int, int], int]


def raw_begin_request(height: int, width: int, cfa: str, black: tuple[int, int, int, int], white: int) -> bytes:
    return _RAW_BEGIN.pack(height, width, cfa.encode("ascii"), *black, white)


def parse_raw_begin(payload: bytes) -> RawMeta:
    if len(payload) != _RAW_BEGIN.size:
        raise ProtocolError("RAW_BEGIN payload of the wrong length")
    h, w, cfa, b0, b1, b2, b3, white = _RAW_BEGIN.unpack(payload)
    return h, w, cfa.decode("ascii", errors="replace"), (b0, b1, b2, b3), white


def raw_chunk_request(offset: int, data: bytes) -> bytes:
    return _OFFSET.pack(offset) + data


def parse_raw_chunk(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < _OFFSET.size:
        raise ProtocolError("RAW_CHUNK payload too short")
    return _OFFSET.unpack_from(payload)[0], payload[_OFFSET.size :]


def crc_payload(data: bytes) -> bytes:
    return CRC.pack(zlib.crc32(data))


def parse_crc(payload: bytes) -> int:
    if len(payload) != CRC.size:
        raise ProtocolError("CRC payload of the wrong length")
    return CRC.unpack(payload)[0]
