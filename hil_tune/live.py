"""The live loop: per frame, predict the ISP parameters from the RAW and push what changed.

capture -> predict -> smooth + hysteresis -> delta push (background thread) -> next frame

- Capture never waits for a push: pushes run on their own thread; a push is skipped, never
  queued, while the previous one is in flight; a maximum push rate applies. The link itself is
  shared, so a capture may wait for one in-flight transaction (well under a millisecond).
  Parameters a device takes only with its stream stopped (a GenICam Width) would stall capture
  for a restart: they are held at their value unless `allow_restarts` says otherwise.
- Frames are taken without dropping settle frames; each carries the parameters it was actually
  made with (by device tag, or by the settle count) and whether it was made mid-change.
- Stability: predictions are smoothed (exponential moving average in the encoded space) and a
  parameter changes only when the smoothed value moves a threshold away from the value applied:
  a static scene does not flicker between neighbouring grid values.
- Safety: a NaN, inf or failing prediction keeps the last good parameters; values come from the
  profile's own decoder (always on the grid, inside the range) and the driver validates again
  before any byte leaves; on a device fault the loop reconnects and continues, logging the gap;
  on exit (end, Ctrl-C, SIGTERM) the device gets back the parameters it had before.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hil_tune.drivers.base import Driver, Frame
from hil_tune.drivers.errors import DeviceError
from hil_tune.drivers.reconnect import Backoff, transient
from hil_tune.errors import HilTuneError, InputError, ParameterError
from hil_tune.models.predictor import for_latency, input_side
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame, pack4, pack4_rgb


@dataclass
class LiveSettings:
    frames: int | None = 300
    seconds: float | None = None
    alpha: float = 0.5  # weight of the newest prediction in the moving average
    threshold: float = 0.02  # encoded units a parameter must move before it is pushed again
    max_push_hz: float = 15.0
    dry_run: bool = False
    preview: int = 256  # the predictor sees the RAW resampled to this many pixels a side
    capture_timeout_s: float = 5.0
    reconnect_attempts: int = 20
    backoff_s: float = 0.1
    # Parameters the device only takes with its stream stopped (the profile's locked_while_streaming)
    # stall capture for a stop-write-restart; live, they keep their value unless this allows it.
    allow_restarts: bool = False

    def __post_init__(self) -> None:
        """Refuse settings that would make a session silently do something else (an average that
        overshoots, a rate that never pushes, a session that never starts), naming the option."""
        checks = [
            ("--alpha", self.alpha, math.isfinite(self.alpha) and 0 < self.alpha <= 1, "a weight in (0, 1]"),
            ("--threshold", self.threshold, math.isfinite(self.threshold) and self.threshold >= 0, "0 or more"),
            ("--max-push-hz", self.max_push_hz, math.isfinite(self.max_push_hz) and self.max_push_hz > 0, "above 0"),
            ("--frames", self.frames, self.frames is None or self.frames >= 1, "at least 1"),
            ("--seconds", self.seconds, self.seconds is None or (math.isfinite(self.seconds) and self.seconds > 0),
             "above 0"),
        ]  # fmt: skip
        for option, value, ok, want in checks:
            if not ok:
                raise ParameterError(f"{option} {value}: must be {want}")


@dataclass
class LiveSummary:
    frames: int = 0
    seconds: float = 0.0
    pushes: int = 0
    pushed_params: int = 0
    skipped_in_flight: int = 0
    rate_limited: int = 0
    bad_predictions: int = 0
    faults: int = 0
    reconnects: int = 0
    gap_seconds: float = 0.0
    push_errors: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_per_push: float | None = None
    restore_error: str | None = None
    held: list[str] = field(default_factory=list)  # parameters kept fixed: pushing them restarts the stream

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["fps"] = self.frames / self.seconds if self.seconds else 0.0
        return d


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": len(values)}


# 8-bit display value -> linear light (gamma 2.2), as a table: the same numbers as the power law
_DISPLAY_TO_LINEAR = (np.arange(256, dtype=np.float32) / np.float32(255)) ** np.float32(2.2)


def preview_packed(frame: Frame, size: int, side: int | None = None) -> torch.Tensor:
    """(1, 4, side, side) packed RAW in [0, 1] of a `size` x `size` preview (side = size/2 unless a
    smaller one is asked for) from a frame's RAW, or from its RGB preview when the device gives no
    RAW (linearised and sampled through an RGGB mosaic).

    A predictor that reads a smaller input than the preview gets it resampled here, in the same
    area pass: OpenCV does that shrink in 6 us where torch's avg_pool2d inside the network took 135.

    On the latency path of every live frame: levelled by table look-up, and resampled (true area
    average, OpenCV) only when the frame is not already the preview's size.
    """
    if frame.raw is not None and frame.cfa is not None:
        black, white = frame.raw_levels or ((0.0, 0.0, 0.0, 0.0), float(np.iinfo(np.uint16).max))
        raw = RawFrame(mosaic=frame.raw, cfa=frame.cfa, black_level=black, white_level=white)
        packed = pack4(raw.normalized(), frame.cfa)
    else:
        # Sampled through an RGGB mosaic straight into its packed planes (R, Gr, Gb, B), then
        # linearised: a third of the pixels, and 8-bit codes by OpenCV's table look-up.
        h, w = (frame.image.shape[0] // 2) * 2, (frame.image.shape[1] // 2) * 2
        planes = pack4_rgb(frame.image[:h, :w], "RGGB")
        if planes.dtype == np.uint8:
            packed = cv2.LUT(planes, _DISPLAY_TO_LINEAR)
        else:
            full = np.iinfo(planes.dtype).max if planes.dtype.kind in "ui" else 1.0  # integer codes or [0, 1]
            packed = np.clip(planes.astype(np.float32) / np.float32(full), 0.0, 1.0) ** np.float32(2.2)
    side = min(side or size // 2, size // 2)
    if packed.shape[:2] != (side, side):
        # Shrinking: OpenCV's area average (exact fractional pixel areas, one SIMD pass over the 4
        # planes). Enlarging a small sensor: plain replication, so no value the sensor did not see.
        grow = packed.shape[0] < side and packed.shape[1] < side
        packed = cv2.resize(packed, (side, side), interpolation=cv2.INTER_NEAREST_EXACT if grow else cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(packed.transpose(2, 0, 1), dtype=np.float32))[None]


def check_profiles(predictor_profile: Profile, device_profile: Profile) -> None:
    """Refuse a predictor trained for other parameters than the device takes.

    Why by parameter and not by name: a predictor's outputs are positions in its profile's
    encoded space; pushed to a device whose ranges, steps or order differ, every value would land
    somewhere else, validated but meaningless. Same parameters under another profile name are fine.
    """
    if [s.describe() for s in device_profile.space] != [s.describe() for s in predictor_profile.space]:
        raise InputError(
            f"the predictor was trained for profile {predictor_profile.name!r}, whose parameters differ from "
            f"the device profile {device_profile.name!r}'s"
        )


@dataclass
class PushResult:
    delta: ParamDict
    ms: float  # the push itself: validation, the link's round trips, the read-back
    error: str | None
    nbytes: int | None
    frame_to_applied_ms: float  # from the frame in hand (before predicting) to the device holding it

    def as_row(self) -> dict[str, Any]:
        return {"delta": self.delta, "ms": round(self.ms, 3), "error": self.error, "bytes": self.nbytes,
                "frame_to_applied_ms": round(self.frame_to_applied_ms, 3)}  # fmt: skip


class PusherBusyError(HilTuneError):
    """A push was asked for while another is in flight: pushes are refused, never queued."""


class PushTimeoutError(HilTuneError):
    """A push did not end within the time its caller waited for it."""


class PushStatus:
    """What `Pusher.push` returns, done when the device holds the push (or it failed): ophyd's
    Status pattern. `wait(timeout)` returns the PushResult, or raises PushTimeoutError; it never returns
    silently with the push still in flight."""

    def __init__(self, delta: ParamDict) -> None:
        self.delta = delta
        self._event = threading.Event()
        self.result: PushResult | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> PushResult:
        if not self._event.wait(timeout):
            raise PushTimeoutError(f"push of {self.delta} still in flight after {timeout:g} s")
        assert self.result is not None
        return self.result

    def _finish(self, result: PushResult) -> None:
        self.result = result
        self._event.set()


class Pusher:
    """One push at a time on one long-lived thread; a push while busy is refused (PusherBusyError; the
    live loop's `offer` skips it), not queued. One condition guards the whole state (busy, the
    pending push, the results), so a push, its end and `wait` can never disagree about whether a
    push is in flight."""

    def __init__(self, driver: Driver, lock: threading.Lock) -> None:
        self.driver, self.lock = driver, lock
        self._cond = threading.Condition()
        self._pending: tuple[ParamDict, float, PushStatus] | None = None
        self._busy = False
        self._closed = False
        self.done: list[PushResult] = []
        self._thread = threading.Thread(target=self._run, name="hil-tune-pusher", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    def push(self, delta: ParamDict, since: float | None = None) -> PushStatus:
        """Start pushing `delta`; `since` is when its frame was in hand. Raises PusherBusyError while a
        push is in flight or after `close`."""
        status = PushStatus(delta)
        with self._cond:
            if self._busy or self._closed:
                raise PusherBusyError("a push is in flight" if self._busy else "the pusher is closed")
            self._busy = True
            self._pending = (delta, time.perf_counter() if since is None else since, status)
            self._cond.notify_all()
            # Hand over before returning: the push thread takes the driver lock first. Otherwise
            # the frame thread keeps the GIL, takes the lock for its next capture, and the push
            # lands a frame or more later (seen under load in the serial scene-change test).
            self._cond.wait_for(lambda: self._pending is None or self._closed)
        return status

    def offer(self, delta: ParamDict, since: float | None = None) -> bool:
        """`push`, skipped (False) rather than refused while busy: what a frame loop wants."""
        try:
            self.push(delta, since)
        except PusherBusyError:
            return False
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                delta, since, status = self._pending
            self.lock.acquire()  # before the frame thread's next capture (never while holding _cond)
            with self._cond:
                self._pending = None
                self._cond.notify_all()  # the offer returns: the push holds the link
            try:
                result = self._push(delta, since)
            finally:
                self.lock.release()
            with self._cond:
                self.done.append(result)
                self._busy = False
                status._finish(result)
                self._cond.notify_all()

    def _push(self, delta: ParamDict, since: float) -> PushResult:
        """One push, with the driver lock held by the caller (captures take the same lock: the
        byte count is this push's alone). A duck-typed driver may not count bytes at all."""
        t = time.perf_counter()
        error, nbytes = None, None
        try:
            count = getattr(self.driver, "link_bytes", lambda: None)
            before = count()
            self.driver.set_params(delta, verify=True)
            after = count()
            nbytes = None if before is None or after is None else after - before
        except Exception as err:  # a device fault, or a bug: reported, and the pusher stays usable
            error = f"{type(err).__name__}: {err}"
        end = time.perf_counter()
        return PushResult(delta, (end - t) * 1000, error, nbytes, (end - since) * 1000)

    def drain(self) -> list[PushResult]:
        with self._cond:
            out, self.done = self.done, []
        return out

    def wait(self, timeout: float = 5.0) -> bool:
        """Until no push is in flight; False when one still is after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)

    def close(self) -> None:
        """Stop the thread once the push in flight (if any) ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Decider:
    """Smoothed prediction -> the delta to push: exponential smoothing (`alpha`), then hysteresis.

    A knob is pushed only when its smoothed value lands on another grid step than the one last
    asked for *and* lies more than `threshold` (encoded units) from it: a static scene settles
    instead of flickering between two neighbouring steps. Held knobs are never pushed.
    """

    def __init__(self, space: Any, wanted: np.ndarray, held: list[str], alpha: float, threshold: float) -> None:
        self.space, self.alpha, self.threshold = space, alpha, threshold
        self.wanted = wanted  # what we last asked the device to hold, as grid indices
        self.live = np.array([n not in held for n in space.names])
        self._smooth: np.ndarray | None = None
        self._pending: tuple[np.ndarray, np.ndarray] | None = None

    def decide(self, u: np.ndarray) -> ParamDict:
        self._smooth = u if self._smooth is None else self.alpha * u + (1 - self.alpha) * self._smooth
        target = self.space.decode_indices(self._smooth)  # on the grid, inside the range, by construction
        wanted_u = self.space.encode_indices(self.wanted)
        moved = self.live & (target != self.wanted) & (np.abs(self._smooth - wanted_u) > self.threshold)
        self._pending = (moved, target)
        specs, names = self.space.specs, self.space.names
        return {names[j]: specs[j].grid_value(int(target[j])) for j in np.flatnonzero(moved)}

    def accepted(self) -> None:
        """The last decided delta was handed to the pusher: it is what we now ask for."""
        if self._pending is not None:
            moved, target = self._pending
            self.wanted = np.where(moved, target, self.wanted)

    def rolled_back(self, applied: np.ndarray) -> None:
        """A push failed and the driver rolled back: ask again from what the device holds."""
        self.wanted = applied


class LatencyLog:
    """Per-stage latencies of a session (ms) and the bytes each push moved on the link."""

    STAGES = ("capture", "predict", "quantize", "push", "decide", "frame_to_applied")

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {k: [] for k in self.STAGES}
        self.bytes: list[int] = []

    def frame(self, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        """capture t0-t1, predict t1-t2, quantise t2-t3, decide (predict to offered) t1-t4."""
        for k, a, b in (("capture", t0, t1), ("predict", t1, t2), ("quantize", t2, t3), ("decide", t1, t4)):
            self.ms[k].append((b - a) * 1000)

    def push(self, result: PushResult) -> None:
        self.ms["push"].append(result.ms)
        if not result.error:
            self.ms["frame_to_applied"].append(result.frame_to_applied_ms)
        if result.nbytes is not None:
            self.bytes.append(result.nbytes)

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {k: percentiles(v) for k, v in self.ms.items()}

    def bytes_per_push(self) -> float | None:
        return float(np.median(self.bytes)) if self.bytes else None


class LiveLoop:
    def __init__(
        self,
        driver: Driver,
        predictor: torch.nn.Module,
        profile: Profile,
        settings: LiveSettings,
        *,
        log: Path | None = None,
        on_frame: Callable[[Frame, dict[str, Any]], None] | None = None,
    ) -> None:
        device_profile = getattr(driver, "profile", None)  # a duck-typed driver may not say
        if isinstance(device_profile, Profile):
            check_profiles(profile, device_profile)
        self.driver, self.predictor, self.profile, self.s = driver, predictor, profile, settings
        self.space = profile.space
        self.log_path, self.on_frame = log, on_frame
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.summary = LiveSummary()
        self._infer: Callable[[torch.Tensor], torch.Tensor] = predictor  # traced in run()
        self._side = settings.preview // 2
        self._last_push = 0.0

    def _predict(self, frame: Frame) -> np.ndarray | None:
        with torch.inference_mode():
            u = self._infer(preview_packed(frame, self.s.preview, self._side))[0].numpy().astype(np.float64)
        return u if np.isfinite(u).all() else None

    def run(self) -> LiveSummary:
        torch.set_num_threads(1)  # latency over throughput: one core per frame, no thread hand-offs
        # preview_packed's shape is fixed for the session: trace once, up front.
        self._side = input_side(self.predictor, self.s.preview)
        self._infer = for_latency(self.predictor, torch.zeros(1, 4, self._side, self._side))
        drv, s, summary = self.driver, self.s, self.summary
        drv.open()
        original = drv.get_params()
        summary.held = [] if s.allow_restarts else self._restart_params()
        decider = Decider(self.space, self._grid_indices(original), summary.held, s.alpha, s.threshold)
        pusher, lat = Pusher(drv, self.lock), LatencyLog()
        self._last_push = 0.0
        log = open(self.log_path, "w") if self.log_path else None  # noqa: SIM115 - closed in finally
        start = time.perf_counter()
        try:
            while not self.stop.is_set():
                if s.frames is not None and summary.frames >= s.frames:
                    break
                if s.seconds is not None and time.perf_counter() - start >= s.seconds:
                    break
                self._frame(decider, pusher, lat, log)
        finally:
            summary.seconds = time.perf_counter() - start
            if not pusher.wait():
                summary.push_errors += 1  # a push that never returned: its device call is hung
            pusher.close()
            for result in pusher.drain():  # the last push, still in flight when the loop ended
                lat.push(result)
            self._restore(original)
            if log:
                log.close()
            drv.close()
            summary.latency_ms, summary.bytes_per_push = lat.percentiles(), lat.bytes_per_push()
        return summary

    def _frame(self, decider: Decider, pusher: Pusher, lat: LatencyLog, log: Any) -> None:
        """One frame: capture, predict, decide, offer the push, collect finished pushes, log."""
        s, summary = self.s, self.summary
        t0 = time.perf_counter()
        try:
            with self.lock:
                frame = self.driver.capture(timeout=s.capture_timeout_s, wait=False)
        except DeviceError as err:
            self._recover(err, pusher, log)
            return
        t1 = time.perf_counter()
        row: dict[str, Any] = {"frame": summary.frames, "frame_id": frame.frame_id,
                               "param_seq": frame.param_seq, "settled": frame.settled}  # fmt: skip
        try:
            u = self._predict(frame)
        except Exception as err:  # a failing predictor must not stop the camera
            u, row["predict_error"] = None, f"{type(err).__name__}: {err}"
        t2 = time.perf_counter()
        if u is None:
            summary.bad_predictions += 1
            row["kept_last_good"] = True
        delta = decider.decide(u) if u is not None else {}
        t3 = time.perf_counter()
        if delta:
            self._offer(delta, decider, pusher, row, since=t1, now=t3)
        t4 = time.perf_counter()
        for result in pusher.drain():
            lat.push(result)
            row.setdefault("push_completed", []).append(result.as_row())
            if result.error:
                summary.push_errors += 1
                decider.rolled_back(self._grid_indices(self.driver.applied))  # what it holds now
        lat.frame(t0, t1, t2, t3, t4)
        row.update(params=frame.params, capture_ms=round((t1 - t0) * 1000, 3),
                   predict_ms=round((t2 - t1) * 1000, 3), quantize_ms=round((t3 - t2) * 1000, 3),
                   push_offer_ms=round((t4 - t3) * 1000, 3))  # fmt: skip
        if log:
            log.write(json.dumps(row) + "\n")
        if self.on_frame:
            self.on_frame(frame, row)
        summary.frames += 1

    def _offer(
        self, delta: ParamDict, decider: Decider, pusher: Pusher, row: dict[str, Any], since: float, now: float
    ) -> None:
        """Push `delta` unless dry-running, rate-limited or a push is still in flight (skipped, not queued)."""
        summary = self.summary
        if self.s.dry_run:
            row["would_push"] = delta
        elif now - self._last_push < 1 / self.s.max_push_hz:
            summary.rate_limited += 1
            row["rate_limited"] = True
        elif pusher.offer(delta, since=since):
            row["pushed"] = delta
            decider.accepted()
            self._last_push = now
            summary.pushes += 1
            summary.pushed_params += len(delta)
        else:
            summary.skipped_in_flight += 1
            row["skipped_in_flight"] = True

    def _grid_indices(self, params: ParamDict) -> np.ndarray:
        return self.space.decode_indices(self.space.encode(params))

    def _restart_params(self) -> list[str]:
        device = getattr(self.driver.profile, "device", None)
        if device is None:
            return []
        return [n for n in self.space.names if n in device.map and device.map[n].locked_while_streaming]

    def _recover(self, err: DeviceError, pusher: Pusher, log: Any) -> None:
        """Reconnect with back-off; the time without frames is logged as a gap."""
        summary = self.summary
        summary.faults += 1
        t = time.perf_counter()
        if not pusher.wait():
            summary.push_errors += 1  # still in flight on the faulted link: its result is lost
        pusher.drain()
        policy = Backoff(self.s.reconnect_attempts, self.s.backoff_s, cap_s=2.0)  # frames wait: a short cap
        for attempt in range(self.s.reconnect_attempts):
            if self.stop.is_set():
                break
            try:
                with self.lock:  # the frame thread must not use the link while it is replaced
                    self.driver.reconnect()
                summary.reconnects += 1
                break
            except DeviceError as again:
                if not transient(again):
                    raise
                time.sleep(policy.delay(attempt))
        else:
            raise err
        gap = time.perf_counter() - t
        summary.gap_seconds += gap
        if log:
            log.write(json.dumps({"fault": f"{type(err).__name__}: {err}", "gap_s": round(gap, 3)}) + "\n")

    def _restore(self, original: ParamDict) -> None:
        try:
            if not self.driver.is_open:
                self.driver.open()
            with self.lock:
                self.driver.set_params(original, verify=True)
        except DeviceError as err:
            self.summary.restore_error = f"{type(err).__name__}: {err}"
