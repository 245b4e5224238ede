"""`genicam`: any GenICam camera or ISP through harvesters and a GenTL producer (.cti).

The profile maps each parameter to a node, with a scale (node value = parameter x scale) and the
node's own type (integer, float, enumeration, boolean) doing the conversion. Features a camera
locks while streaming are written with the stream stopped and restarted. Buffers are copied and
re-queued at once: callers never hold a producer's memory.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np

from hil_tune.drivers.base import DEFAULT_TIMEOUT_S, Deadline, DeviceInfo, Driver, Grab
from hil_tune.drivers.errors import (
    DeviceDisconnected,
    DeviceNotFound,
    DeviceTimeout,
    ParameterRejected,
    ProtocolError,
)
from hil_tune.errors import ParameterError
from hil_tune.params import ParamDict, ParamValue
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame

CTI_ENV = "GENICAM_GENTL64_PATH"


def find_producers(cti: str | None = None) -> list[Path]:
    """The producer given, or every .cti on GENICAM_GENTL64_PATH (the GenTL standard's variable)."""
    if cti:
        return [Path(cti)]
    out: list[Path] = []
    for folder in filter(None, os.environ.get(CTI_ENV, "").split(os.pathsep)):
        out += sorted(Path(p) for p in glob.glob(os.path.join(folder, "*.cti")))
    return out


def bundled_producer() -> Path | None:
    """viky.cti, the simulated camera the `genicam` wheel ships (used by tests and the demo)."""
    try:
        import genicam
    except ImportError:
        return None
    path = Path(genicam.__file__).parent / "viky.cti"
    return path if path.is_file() else None


def _genicam_errors() -> tuple[type[BaseException], ...]:
    from genicam import genapi, gentl

    return (genapi.GenericException, gentl.GenericException)


class GenICamDriver(Driver):
    name = "genicam"
    transport = "genicam"

    def __init__(
        self,
        profile: Profile | str = "viky",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        device: str | None = None,
        cti: str | None = None,
        num_buffers: int = 2,
    ) -> None:
        super().__init__(profile, timeout=timeout)
        if self.profile.device is None or self.profile.device.control != "genicam":
            raise DeviceNotFound(f"profile {self.profile.name} has no GenICam node map ([device] control = 'genicam')")
        self.selector, self.cti, self.num_buffers = device, cti, num_buffers
        self._h: Any = None
        self._ia: Any = None
        self._props: dict[str, Any] = {}
        # A stream restart starts the producer's frame ids again; ours keep counting up across it.
        self._id_base = 0
        self._last_id = -1

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import harvesters.core  # noqa: F401
        except ImportError:
            return False, "harvesters is not installed"
        if not find_producers():
            return False, f"no GenTL producer: set {CTI_ENV} or pass --cti (the genicam wheel ships viky.cti)"
        return True, "ready"

    @classmethod
    def discover(cls, timeout: float = DEFAULT_TIMEOUT_S, cti: str | None = None, **_: Any) -> list[dict[str, Any]]:
        from harvesters.core import Harvester

        out: list[dict[str, Any]] = []
        for producer in find_producers(cti):
            h = Harvester()
            try:
                h.add_file(str(producer), check_existence=True)
                h.update()
                for i, info in enumerate(h.device_info_list):
                    props = info.property_dict
                    out.append({"selector": props.get("serial_number") or str(i), "index": i, "cti": str(producer),
                                "vendor": props.get("vendor"), "model": props.get("model"),
                                "serial_number": props.get("serial_number")})  # fmt: skip
            finally:
                h.reset()
        return out

    # -- connection ----------------------------------------------------------------------------

    def _connect(self, deadline: Deadline) -> None:
        from harvesters.core import Harvester

        producers = find_producers(self.cti)
        if not producers:
            raise DeviceNotFound(f"genicam: no GenTL producer (set {CTI_ENV} or pass --cti)")
        missing = [str(p) for p in producers if not p.is_file()]
        if missing:
            raise DeviceNotFound(f"genicam: producer file {missing[0]} does not exist")
        h = Harvester()
        try:
            for producer in producers:
                h.add_file(str(producer))
            h.update()
            infos = h.device_info_list
            index = self._select(infos)
            self._props = dict(infos[index].property_dict)
            self._ia = h.create(index)
            self._h = h
            self._check_nodes()
            self._ia.num_buffers = self.num_buffers
            self._ia.start()
            self._id_base = self._last_id + 1  # a reopened stream counts from its own start again
        except BaseException:
            self._h = h
            self._disconnect()
            raise

    def _select(self, infos: Any) -> int:
        if not infos:
            raise DeviceNotFound("genicam: the producer sees no device")
        serials = [str(i.property_dict.get("serial_number")) for i in infos]
        if self.selector is None:
            return 0
        if self.selector in serials:
            return serials.index(self.selector)
        if self.selector.isdigit() and int(self.selector) < len(infos):
            return int(self.selector)
        raise DeviceNotFound(
            f"genicam: no device with serial number or index {self.selector!r} (serials: {', '.join(serials)})"
        )

    def _node(self, name: str) -> Any:
        nm = self._ia.remote_device.node_map
        if not nm.has_node(name):
            raise ProtocolError(f"genicam: node {name!r} is missing from the device's node map")
        return nm.get_node(name)

    def _check_nodes(self) -> None:
        """Every mapped node exists and can hold every value of its parameter's range."""
        assert self.profile.device is not None
        problems = []
        for spec in self.space:
            m = self.profile.device.map[spec.name]
            assert m.node is not None
            node = self._node(m.node)
            kind = type(node).__name__
            if spec.kind == "grid" and kind in ("IInteger", "IFloat"):
                assert spec.min is not None and spec.max is not None
                lo, hi = spec.min * m.scale, spec.max * m.scale
                if lo < node.min or hi > node.max:
                    problems.append(
                        f"{spec.name}: {lo:g}..{hi:g} exceeds node {m.node} range {node.min:g}..{node.max:g}"
                    )
            elif spec.kind == "choice" and kind == "IEnumeration":
                absent = [c for c in spec.choices or () if c not in node.symbolics]
                if absent:
                    problems.append(f"{spec.name}: node {m.node} has no entries {', '.join(absent)}")
            elif kind not in ("IInteger", "IFloat", "IEnumeration", "IBoolean"):
                problems.append(f"{spec.name}: node {m.node} is a {kind}, not a value")
        if problems:
            raise ParameterRejected("genicam: profile does not fit the device: " + "; ".join(problems))

    def _disconnect(self) -> None:
        ia, h, self._ia, self._h = self._ia, self._h, None, None
        errors: list[BaseException] = []
        for step in (lambda: ia and ia.stop(), lambda: ia and ia.destroy(), lambda: h and h.reset()):
            try:
                step()
            except Exception as err:
                errors.append(err)
        if errors:
            raise DeviceDisconnected(f"genicam: while closing: {errors[0]}")

    def _info(self) -> DeviceInfo:
        assert self.profile.device is not None
        return DeviceInfo(
            driver=self.name,
            transport=self.transport,
            vendor=str(self._props.get("vendor", "")),
            model=str(self._props.get("model", "")),
            serial_number=str(self._props.get("serial_number", "")),
            firmware=str(self._props.get("version", "")),
            raw_injection=False,
            live_sensor=True,
            frame_tags=False,
            settle_frames=self.profile.device.settle_frames,
            extra={"id": self._props.get("id_"), "num_buffers": self.num_buffers},
        )

    # -- parameters ----------------------------------------------------------------------------

    def _read(self, deadline: Deadline) -> ParamDict:
        assert self.profile.device is not None
        out: ParamDict = {}
        try:
            for spec in self.space:
                m = self.profile.device.map[spec.name]
                assert m.node is not None
                value = self._node(m.node).value
                v: ParamValue = str(value) if spec.kind == "choice" else float(value) / m.scale
                out[spec.name] = spec.quantize(v)[0]
        except ParameterError as err:
            raise ProtocolError(f"genicam: the device holds a value outside the profile: {err}") from None
        except _genicam_errors() as err:
            raise ProtocolError(f"genicam: reading nodes failed: {err}") from None
        return out

    def _to_node(self, node: Any, value: ParamValue, scale: float) -> object:
        kind = type(node).__name__
        if kind == "IInteger":
            return round(float(value) * scale)
        if kind == "IFloat":
            return float(value) * scale
        if kind == "IBoolean":
            return bool(float(value))
        return str(value)

    def _write(self, values: ParamDict, deadline: Deadline) -> tuple[int | None, ParamDict | None]:
        from genicam import genapi

        assert self.profile.device is not None
        locked = [n for n in values if self.profile.device.map[n].locked_while_streaming]
        free = [n for n in values if n not in locked]
        try:
            for name in free:
                try:
                    self._set_node(name, values[name])
                except genapi.AccessException:
                    locked.append(name)  # the camera locks it while streaming after all
            if locked:
                self._ia.stop()
                try:
                    for name in locked:
                        self._set_node(name, values[name])
                finally:
                    self._ia.start()
                    self._stream_restarted()  # stopping dropped the buffered frames: none is stale
                    self._id_base = self._last_id + 1
        except genapi.OutOfRangeException as err:
            raise ParameterRejected(f"genicam: device refused a value: {err}") from None
        except _genicam_errors() as err:
            raise ProtocolError(f"genicam: writing nodes failed: {err}") from None
        return None, None

    def _set_node(self, name: str, value: ParamValue) -> None:
        assert self.profile.device is not None
        m = self.profile.device.map[name]
        assert m.node is not None
        node = self._node(m.node)
        node.value = self._to_node(node, value, m.scale)

    # -- frames --------------------------------------------------------------------------------

    def _grab(self, raw: RawFrame | None, deadline: Deadline) -> Grab:
        from genicam import gentl

        try:
            with self._ia.fetch(timeout=max(deadline.left(), 0.001)) as buf:
                comp = buf.payload.components[0]
                h, w = comp.height, comp.width
                data = np.array(comp.data, copy=True)  # the buffer goes back to the producer on exit
                frame_id = self._id_base + int(buf.frame_id)
                try:
                    stamp: int | None = int(buf.timestamp_ns)
                except gentl.GenericException:
                    stamp = None
        except gentl.TimeoutException:
            raise DeviceTimeout(f"genicam: no frame within {deadline.seconds:g} s") from None
        except _genicam_errors() as err:
            raise DeviceDisconnected(f"genicam: fetch failed: {err}") from None
        channels = data.size // (h * w)
        image = data.reshape(h, w, channels)
        image = np.repeat(image, 3, axis=2) if channels == 1 else image[:, :, :3]
        self._last_id = max(self._last_id, frame_id)
        return Grab(image=np.ascontiguousarray(image), frame_id=frame_id, device_time_ns=stamp)
