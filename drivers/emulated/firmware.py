"""The emulated board's firmware: the synthetic ISP behind the register protocol.

It is the device side of docs/protocol.md, written the way board firmware would be: a register
file checked against its own datasheet (the profile's map), shadow registers that reach the
pipeline only at a frame boundary and `settle_frames` frames late, a reply cache so a retried
request is answered again but never executed twice, and a RAW upload buffer for injection. The
serial emulator and the USB backend put different transports in front of this one object.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from hil_tune.drivers import protocol as p
from hil_tune.drivers.base import scale_from_device, scale_to_device
from hil_tune.drivers.emulated.scene import sensor_frame
from hil_tune.drivers.errors import ProtocolError
from hil_tune.drivers.registers import register_map
from hil_tune.drivers.settle import SettleQueue
from hil_tune.isp.firmwares import isp_for
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile, load_profile
from hil_tune.raw import RawFrame

FIRMWARE_VERSION = "1.2.0"


class BoardFirmware:
    """Handles one request body at a time (thread-safe) and returns the reply body."""

    def __init__(
        self,
        profile: Profile | str = "emulated-board",
        *,
        serial_number: str = "HT-0001",
        settle_frames: int | None = None,
        frame_tags: bool = False,
        sensor: str = "astronaut",
        sensor_size: int = 64,
        seed: int = 0,
        power_on: Mapping[str, object] | None = None,
        firmware: str = "synthetic",
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.regs = register_map(self.profile)
        assert self.profile.device is not None
        self.serial_number = serial_number
        self.settle_frames = self.profile.device.settle_frames if settle_frames is None else settle_frames
        self.frame_tags = frame_tags
        self.sensor, self.sensor_size, self.seed = sensor, sensor_size, seed
        self.isp = isp_for(firmware, self.profile)
        self.variant = firmware
        self._lock = threading.Lock()
        # Power-on register values: the profile's defaults, or a board configuration's own.
        defaults, _ = self.profile.space.validate(power_on or {})
        self.shadow = {a: scale_to_device(defaults[r.name], r.choices, r.scale) for a, r in self.regs.items()}
        self.settle: SettleQueue[dict[int, int]] = SettleQueue(dict(self.shadow), self.settle_frames)
        self.tag = 0
        self.frame_id = 0
        self.written: list[tuple[int, int]] = []  # every value that ever reached a register (tests)
        self.executed = 0  # requests executed, not counting replays from the cache
        self.busy_until = 0.0
        self._cache: tuple[bytes, bytes] | None = None
        self._scene: RawFrame | None = None
        self._frame: tuple[bytes, bytes] = (b"", b"")
        self._upload: bytearray | None = None
        self._upload_meta: p.RawMeta | None = None
        self._injected: RawFrame | None = None
        self._frames: OrderedDict[tuple[int, tuple[tuple[int, int], ...]], np.ndarray] = OrderedDict()

    # -- transport entry point -----------------------------------------------------------------

    def handle(self, body: bytes) -> bytes:
        with self._lock:
            try:
                req = p.decode_body(body)
            except ProtocolError:
                seq = int.from_bytes(body[1:3], "little") if len(body) >= 3 else 0
                return p.encode_body(p.Packet(seq, p.Status.BAD_CRC))
            if self._cache is not None and self._cache[0] == body:
                return self._cache[1]  # a retry of what was just executed: answer, do not redo
            if time.monotonic() < self.busy_until:
                return p.encode_body(p.Packet(req.seq, p.Status.BUSY))
            status, payload = self._execute(req)
            self.executed += 1
            reply = p.encode_body(p.Packet(req.seq, status, payload))
            self._cache = (body, reply)
            return reply

    def _execute(self, req: p.Packet) -> tuple[p.Status, bytes]:
        try:
            handler = {
                p.Cmd.HELLO: self._hello,
                p.Cmd.READ: self._read,
                p.Cmd.WRITE: self._write,
                p.Cmd.CAPTURE: self._capture,
                p.Cmd.READ_FRAME: self._read_frame,
                p.Cmd.RAW_BEGIN: self._raw_begin,
                p.Cmd.RAW_CHUNK: self._raw_chunk,
                p.Cmd.RAW_END: self._raw_end,
            }[p.Cmd(req.code)]
        except (KeyError, ValueError):
            return p.Status.BAD_COMMAND, b""
        try:
            return handler(req.payload)
        except ProtocolError:
            return p.Status.BAD_LENGTH, b""

    # -- commands -------------------------------------------------------------------------------

    def identity(self) -> dict[str, object]:
        assert self.profile.device is not None
        return {
            "vendor": "hil-tune",
            "model": "emulated ISP board",
            "serial_number": self.serial_number,
            "firmware": f"{FIRMWARE_VERSION}-{self.variant}",
            "protocol": p.VERSION,
            "profile": self.profile.name,
            "map_sha256": self.profile.device_sha256,
            "vendor_id": self.profile.device.vendor_id,
            "product_id": self.profile.device.product_id,
            "frame_tags": self.frame_tags,
            "settle_frames": self.settle_frames,
            "raw_injection": True,
            "live_sensor": True,
            "sensor_black": list(self._sensor().black_level),
            "sensor_white": self._sensor().white_level,
        }

    def _sensor(self) -> RawFrame:
        if self._scene is None:
            self._scene = sensor_frame(self.sensor, self.sensor_size, self.profile, self.seed)
        return self._scene

    def set_scene(self, sensor: str) -> None:
        """What the sensor sees changes (a live test's scene change); levels stay the sensor's."""
        with self._lock:
            self._scene = sensor_frame(sensor, self.sensor_size, self.profile, self.seed)
            self._frames.clear()

    def _hello(self, payload: bytes) -> tuple[p.Status, bytes]:
        return p.Status.OK, json.dumps(self.identity(), separators=(",", ":")).encode()

    def _read(self, payload: bytes) -> tuple[p.Status, bytes]:
        addrs = p.parse_read_request(payload)
        if any(a not in self.regs for a in addrs):
            return p.Status.BAD_ADDRESS, b""
        return p.Status.OK, p.values_payload([self.shadow[a] for a in addrs])

    def _write(self, payload: bytes) -> tuple[p.Status, bytes]:
        entries, commit = p.parse_write_request(payload)
        for addr, value in entries:  # all or nothing: check every entry before touching one
            reg = self.regs.get(addr)
            if reg is None:
                return p.Status.BAD_ADDRESS, b""
            if not (reg.lo <= value <= reg.hi and (value - reg.lo) % reg.step == 0):
                return p.Status.OUT_OF_RANGE, b""
        for addr, value in entries:
            self.shadow[addr] = value
            self.written.append((addr, value))
        tag = p.NO_TAG
        if commit:
            self.tag = (self.tag + 1) % p.NO_TAG
            self.settle.commit(dict(self.shadow), self.tag)
            tag = self.tag
        return p.Status.OK, p.write_reply(tag, [self.shadow[a] for a, _ in entries])

    def params_of(self, registers: dict[int, int]) -> ParamDict:
        out: ParamDict = {}
        for addr, reg in self.regs.items():
            value = scale_from_device(registers[addr], reg.choices, reg.scale)
            out[reg.name] = self.profile.space[reg.name].quantize(value)[0]
        return out

    def _capture(self, payload: bytes) -> tuple[p.Status, bytes]:
        if len(payload) != 1:
            raise ProtocolError("CAPTURE takes one flag byte")
        if payload[0] & p.CAPTURE_INJECTED:
            if self._injected is None:
                return p.Status.NO_FRAME, b""
            raw = self._injected
        else:
            raw = self._sensor()
        self.settle.frame_boundary()  # committed settings that have waited their settle frames go live
        # A static scene under unchanged settings gives the same frame: render it once (an emulator
        # that re-ran BM3D for every identical frame could not keep up with a live loop).
        key = (id(raw), tuple(sorted(self.settle.active.items())))
        image = self._frames.get(key)
        if image is None:
            image = self.isp.run_frame(raw, self.params_of(self.settle.active))
            self._frames[key] = image
            while len(self._frames) > 8:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(key)
        self.frame_id = (self.frame_id + 1) & 0xFFFFFFFF
        mosaic = np.ascontiguousarray(raw.mosaic, dtype="<u2")
        self._frame = (np.ascontiguousarray(image).tobytes(), mosaic.tobytes())
        header = p.FrameHeader(
            frame_id=self.frame_id,
            tag=self.settle.active_tag if self.frame_tags else p.NO_TAG,
            device_time_us=time.monotonic_ns() // 1000,
            height=image.shape[0],
            width=image.shape[1],
            image_len=len(self._frame[0]),
            raw_len=len(self._frame[1]),
            cfa=raw.cfa,
        )
        return p.Status.OK, header.pack()

    def frame_bytes(self, which: int) -> bytes:
        return self._frame[which] if which in (p.FRAME_IMAGE, p.FRAME_RAW) else b""

    def _read_frame(self, payload: bytes) -> tuple[p.Status, bytes]:
        which, offset, length = p.parse_read_frame_request(payload)
        data = self.frame_bytes(which)
        if not data:
            return p.Status.NO_FRAME, b""
        if length > p.MAX_PAYLOAD or offset > len(data):
            return p.Status.BAD_LENGTH, b""
        return p.Status.OK, data[offset : offset + length]

    def _raw_begin(self, payload: bytes) -> tuple[p.Status, bytes]:
        h, w, cfa, black, white = p.parse_raw_begin(payload)
        if (
            cfa not in ("RGGB", "BGGR", "GRBG", "GBRG")
            or h % 2
            or w % 2
            or not 0 < h * w <= 4096 * 4096
            or white <= max(black)
        ):
            return p.Status.OUT_OF_RANGE, b""
        self._upload, self._upload_meta = bytearray(h * w * 2), (h, w, cfa, black, white)
        return p.Status.OK, b""

    def _raw_chunk(self, payload: bytes) -> tuple[p.Status, bytes]:
        offset, data = p.parse_raw_chunk(payload)
        if self._upload is None or offset + len(data) > len(self._upload):
            return p.Status.BAD_LENGTH, b""
        self._upload[offset : offset + len(data)] = data
        return p.Status.OK, b""

    def _raw_end(self, payload: bytes) -> tuple[p.Status, bytes]:
        crc = p.parse_crc(payload)
        if self._upload is None or self._upload_meta is None:
            return p.Status.NO_FRAME, b""
        if zlib.crc32(self._upload) != crc:
            return p.Status.BAD_CRC, b""
        h, w, cfa, black, white = self._upload_meta
        mosaic = np.frombuffer(bytes(self._upload), dtype="<u2").reshape(h, w).astype(np.uint16)
        levels = (float(black[0]), float(black[1]), float(black[2]), float(black[3]))
        self._injected = RawFrame(mosaic=mosaic, cfa=cfa, black_level=levels, white_level=float(white))
        self._frames.clear()
        return p.Status.OK, b""
