"""A pyusb backend whose only device is the emulated board, for tests and the demo.

pyusb talks to libusb through a backend object; this one answers the same calls from the
firmware model (docs/protocol.md over vendor control transfers, frames on bulk endpoint 0x81).
Everything above it, `usb.core.find`, `Device.ctrl_transfer`, `Device.read`, string descriptors,
is the real pyusb, so the `usb` driver runs unmodified against it and against a real board.
Unplug/replug makes the device vanish from enumeration and fail with ENODEV, then come back at a
new address, as the kernel does.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from hil_tune.drivers import protocol as p
from hil_tune.drivers.emulated.firmware import BoardFirmware

REQ_SUBMIT = 0x01  # vendor OUT: one request packet
REQ_RESULT = 0x02  # vendor IN: the reply packet of the last request
EP_FRAMES = 0x81  # bulk IN: frame bytes (image, then RAW) after a CAPTURE
_GET_DESCRIPTOR = 0x06
_DESC_STRING = 3


@dataclass
class UsbFaults:
    silent: bool = False  # every transfer times out
    drop_replies: int = 0  # the next RESULT requests time out (the request itself was executed)
    corrupt_replies: int = 0


@dataclass
class EmulatedBoard:
    firmware: BoardFirmware
    vendor_id: int
    product_id: int
    bus: int = 1
    address: int = 7
    plugged: bool = True
    faults: UsbFaults = field(default_factory=UsbFaults)
    reply: bytes | None = None
    bulk: bytearray = field(default_factory=bytearray)
    generation: int = 0  # bumps on every replug; handles of an older generation are dead

    @property
    def strings(self) -> dict[int, str]:
        return {1: "hil-tune", 2: "emulated ISP board", 3: self.firmware.serial_number}


class EmulatedUsbBackend(usb.backend.IBackend):
    def __init__(self, boards: list[EmulatedBoard]) -> None:
        self.boards = boards
        self._lock = threading.Lock()
        self.ctrl_bytes = 0

    @classmethod
    def with_board(cls, firmware: BoardFirmware) -> EmulatedUsbBackend:
        dev = firmware.profile.device
        assert dev is not None and dev.vendor_id is not None and dev.product_id is not None
        return cls([EmulatedBoard(firmware, dev.vendor_id, dev.product_id)])

    def unplug(self, i: int = 0) -> None:
        self.boards[i].plugged = False

    def replug(self, i: int = 0) -> None:
        board = self.boards[i]
        board.plugged, board.generation = True, board.generation + 1
        board.address += 1
        board.reply, board.bulk = None, bytearray()

    # -- descriptors ---------------------------------------------------------------------------

    def enumerate_devices(self) -> Any:
        return [b for b in self.boards if b.plugged]

    def get_device_descriptor(self, dev: EmulatedBoard) -> Any:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0xFF, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vendor_id, idProduct=dev.product_id,
            bcdDevice=0x0120, iManufacturer=1, iProduct=2, iSerialNumber=3, bNumConfigurations=1,
            address=dev.address, bus=dev.bus, port_number=1, port_numbers=(1,), speed=3,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: EmulatedBoard, config: int) -> Any:
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=25, bNumInterfaces=1, bConfigurationValue=1,
            iConfiguration=0, bmAttributes=0x80, bMaxPower=250, extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: EmulatedBoard, intf: int, alt: int, config: int) -> Any:
        if intf != 0 or alt != 0:
            raise IndexError("no such interface")
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0, bNumEndpoints=1,
            bInterfaceClass=0xFF, bInterfaceSubClass=0, bInterfaceProtocol=0, iInterface=0, extra_descriptors=[],
        )  # fmt: skip

    def get_endpoint_descriptor(self, dev: EmulatedBoard, ep: int, intf: int, alt: int, config: int) -> Any:
        if ep != 0:
            raise IndexError("no such endpoint")
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=EP_FRAMES, bmAttributes=0x02, wMaxPacketSize=512,
            bInterval=0, bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    # -- handles -------------------------------------------------------------------------------

    def open_device(self, dev: EmulatedBoard) -> Any:
        self._alive(SimpleNamespace(board=dev, generation=dev.generation))
        return SimpleNamespace(board=dev, generation=dev.generation)

    def close_device(self, dev_handle: Any) -> None:
        pass

    def set_configuration(self, dev_handle: Any, config_value: int) -> None:
        self._alive(dev_handle)

    def get_configuration(self, dev_handle: Any) -> int:
        self._alive(dev_handle)
        return 1

    def set_interface_altsetting(self, dev_handle: Any, intf: int, altsetting: int) -> None:
        self._alive(dev_handle)

    def claim_interface(self, dev_handle: Any, intf: int) -> None:
        self._alive(dev_handle)

    def release_interface(self, dev_handle: Any, intf: int) -> None:
        pass

    def reset_device(self, dev_handle: Any) -> None:
        self._alive(dev_handle)
        dev_handle.board.reply, dev_handle.board.bulk = None, bytearray()

    def clear_halt(self, dev_handle: Any, ep: int) -> None:
        self._alive(dev_handle)

    def is_kernel_driver_active(self, dev_handle: Any, intf: int) -> bool:
        return False

    def _alive(self, handle: Any) -> EmulatedBoard:
        board: EmulatedBoard = handle.board
        if not board.plugged or handle.generation != board.generation:
            raise usb.core.USBError("No such device (it may have been disconnected)", errno.ENODEV, -4)
        if board.faults.silent:
            raise usb.core.USBTimeoutError("Operation timed out", errno.ETIMEDOUT, -7)
        return board

    # -- transfers -----------------------------------------------------------------------------

    def ctrl_transfer(
        self, dev_handle: Any, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, data: Any, timeout: int
    ) -> int:
        board = self._alive(dev_handle)
        with self._lock:
            self.ctrl_bytes += len(data)
            if bmRequestType == 0x80 and bRequest == _GET_DESCRIPTOR and wValue >> 8 == _DESC_STRING:
                index = wValue & 0xFF
                text = b"\x09\x04" if index == 0 else board.strings.get(index, "").encode("utf-16-le")
                desc = bytes([2 + len(text), _DESC_STRING]) + text
                return self._fill(data, desc)
            if bmRequestType == 0x40 and bRequest == REQ_SUBMIT:
                board.reply = board.firmware.handle(bytes(data))
                reply = p.decode_body(board.reply)
                if reply.code == p.Status.OK and bytes(data)[3] == p.Cmd.CAPTURE:
                    board.bulk = bytearray(
                        board.firmware.frame_bytes(p.FRAME_IMAGE) + board.firmware.frame_bytes(p.FRAME_RAW)
                    )
                return len(data)
            if bmRequestType == 0xC0 and bRequest == REQ_RESULT:
                if board.faults.drop_replies > 0:
                    board.faults.drop_replies -= 1
                    raise usb.core.USBTimeoutError("Operation timed out", errno.ETIMEDOUT, -7)
                if board.reply is None:
                    raise usb.core.USBError("Pipe error", errno.EPIPE, -9)
                reply = board.reply
                if board.faults.corrupt_replies > 0:
                    board.faults.corrupt_replies -= 1
                    reply = reply[:-1] + bytes([reply[-1] ^ 0x40])
                return self._fill(data, reply)
            raise usb.core.USBError("Pipe error", errno.EPIPE, -9)  # unknown request: the device stalls

    def bulk_read(self, dev_handle: Any, ep: int, intf: int, buff: Any, timeout: int) -> int:
        board = self._alive(dev_handle)
        with self._lock:
            if ep != EP_FRAMES or not board.bulk:
                raise usb.core.USBTimeoutError("Operation timed out", errno.ETIMEDOUT, -7)
            n = min(len(buff), len(board.bulk))
            buff[:n] = type(buff)(buff.typecode, bytes(board.bulk[:n]))
            del board.bulk[:n]
            return n

    @staticmethod
    def _fill(buff: Any, payload: bytes) -> int:
        n = min(len(buff), len(payload))
        for i in range(n):
            buff[i] = payload[i]
        return n
