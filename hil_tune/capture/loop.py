"""The capture loop: push each planned parameter set, take the settled frame, write the sample.

Hardware is driven by one process, in plan order, with reconnect-and-retry on faults (the driver
finds its device again by serial number or stable path) and a bounded number of attempts, after
which the sample is recorded as failed with the reason and the sweep goes on. The simulator can run
N worker processes, each with its own driver; every worker writes finished samples itself (atomic
files), the parent appends manifest rows and packs shards, so the parent is never the bottleneck.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil_tune.capture.dataset import DatasetFolder, Sample, atomic_write, encode_sample, json_digest, tar_bytes
from hil_tune.capture.parts import read_part
from hil_tune.capture.plan import Plan, PlanRow
from hil_tune.capture.sources import Source, load_source
from hil_tune.drivers.base import Driver, Frame
from hil_tune.drivers.errors import DeviceError
from hil_tune.drivers.reconnect import Backoff, RetriesExhaustedError, with_reconnect
from hil_tune.drivers.registry import create_driver
from hil_tune.errors import HilTuneError
from hil_tune.profiles import Profile, load_profile
from hil_tune.raw import RawFrame


def clipped_share(image: np.ndarray) -> float:
    """Share of pixels blown out (a channel at 255) or crushed (all channels at 0)."""
    return float(((image == 255).any(axis=-1) | (image == 0).all(axis=-1)).mean())


@dataclass
class CaptureSettings:
    driver: str
    driver_options: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None  # defaults to the profile stored in the plan
    retries: int = 3
    timeout_s: float = 60.0
    backoff_s: float = 0.2
    restore: bool = True  # push back what the device held before the sweep when it ends


@dataclass
class CaptureResult:
    planned: int
    written: int
    failed: dict[int, str]
    seconds: float
    isp_seconds: float  # time inside push + capture (the device's own work), summed over samples
    restored: bool | None = None  # the device is back on its pre-sweep setting (None: not asked, or simulator workers)
    recaptured: list[str] = field(default_factory=list)  # samples found corrupt on resume, and why


class SampleTaker:
    """Everything one process needs to take samples: its driver, the plan, cached source frames."""

    def __init__(self, root: Path, settings: CaptureSettings) -> None:
        self.folder = DatasetFolder(root)
        self.plan = self.folder.plan()
        self.profile: Profile = load_profile(settings.profile) if settings.profile else self.plan.load_profile()
        if self.profile.sha256 != self.plan.profile_sha256:
            raise HilTuneError(f"profile {self.profile.name} differs from the one the plan was made with")
        self.settings = settings
        self.sources = {s["id"]: Source(s["id"], s["kind"], s["location"], s.get("draw", 0)) for s in self.plan.sources}
        self._frames: dict[str, RawFrame] = {}
        self.driver: Driver = create_driver(settings.driver, self.profile, **settings.driver_options)
        self.driver.open()
        self.info = self.driver.describe()
        # Stage / unstage (as ophyd does): what the device held before the sweep is what it holds
        # after, so a capture never leaves a bench camera on the last random setting it tried.
        self.held = self.driver.get_params()

    def close(self, restore: bool = False) -> bool | None:
        """Close the device; with `restore`, push back its pre-sweep setting first. Returns whether
        the restore took (None when not asked); a device that is gone cannot be restored."""
        restored = None
        try:
            if restore:
                try:
                    if not self.driver.is_open:
                        self.driver.reconnect()
                    self.driver.set_params(self.held, verify=True)
                    restored = True
                except DeviceError:
                    restored = False
        finally:
            self.driver.close()
        return restored

    def check_capabilities(self) -> None:
        kinds = {s.kind for s in self.sources.values()}
        if kinds - {"live"} and not self.info.raw_injection:
            raise HilTuneError(f"driver {self.info.driver} cannot inject RAW frames: use --source live")
        if "live" in kinds and not self.info.live_sensor:
            raise HilTuneError(f"driver {self.info.driver} has no live sensor; give RAW or image sources")

    def _patch(self, row: PlanRow) -> RawFrame | None:
        source = self.sources[row.source]
        if source.kind == "live":
            return None
        if row.source not in self._frames:
            self._frames[row.source] = load_source(source, self.profile, self.plan.seed)
        assert row.patch is not None
        return self._frames[row.source].crop(*row.patch)

    def take(self, row: PlanRow) -> tuple[dict[str, Any], float]:
        """Write one sample (pending tar); returns its manifest row and the seconds the device took."""
        patch = self._patch(row)
        frame, busy, attempts, error = self._settled_frame(row, patch)
        if frame is None:
            return self._failed(row, error, attempts), 0.0
        sample = self._sample(row, patch, frame)
        t = time.perf_counter()
        members = encode_sample(sample)
        atomic_write(self.folder.pending_path(row.index), tar_bytes([(row.index, members)]))
        manifest = {
            "index": row.index, "status": "done", "file": f"pending/{row.index:08d}.tar", "source": row.source,
            "attempts": attempts, "host_time_ns": frame.host_time_ns, "device_time_ns": frame.device_time_ns,
            "device_s": round(busy, 6), "write_s": round(time.perf_counter() - t, 6),
            "json_sha256": json_digest(members),
        }  # fmt: skip
        return manifest, busy

    def _settled_frame(self, row: PlanRow, patch: RawFrame | None) -> tuple[Frame | None, float, int, str]:
        """Push and capture, reconnecting after a transient fault: (frame or None, device seconds,
        attempts, last error)."""

        def push_and_capture() -> tuple[Frame, float]:
            t = time.perf_counter()
            self.driver.set_params(row.params, verify=True)
            frame = self.driver.capture(patch, timeout=self.settings.timeout_s)
            return frame, time.perf_counter() - t

        policy = Backoff(self.settings.retries, self.settings.backoff_s)
        try:
            (frame, busy), attempts = with_reconnect(self.driver, push_and_capture, policy)
        except RetriesExhaustedError as gave_up:
            return None, 0.0, gave_up.attempts, str(gave_up)
        return frame, busy, attempts, ""

    def _failed(self, row: PlanRow, error: str, attempts: int) -> dict[str, Any]:
        return {"index": row.index, "status": "failed", "source": row.source, "attempts": attempts, "error": error}

    def _sample(self, row: PlanRow, patch: RawFrame | None, frame: Frame) -> Sample:
        space = self.profile.space
        info = self.info
        if patch is not None:
            raw = np.asarray(patch.mosaic, dtype=np.uint16)
            cfa, black, white = patch.cfa, list(patch.black_level), patch.white_level
            reference = None if patch.reference is None else np.round(patch.reference * 255).astype(np.uint8)
        else:
            raw, cfa, black, white, reference = frame.raw, frame.cfa, None, None, None
        meta = {
            "source": row.source, "kind": self.sources[row.source].kind, "patch": row.patch, "cfa": cfa,
            "black_level": black, "white_level": white,
            "params_requested": row.params, "params_applied": frame.params,
            "encoded_requested": list(row.encoded), "encoded_applied": [float(x) for x in space.encode(frame.params)],
            "profile": self.profile.name, "profile_sha256": self.profile.sha256, "region": self.plan.region.name,
            "device": {"driver": info.driver, "transport": info.transport, "vendor": info.vendor, "model": info.model,
                       "serial_number": info.serial_number, "firmware": info.firmware},
            "clipped_share": round(clipped_share(frame.image), 6),
        }  # fmt: skip
        return Sample(row.index, meta, raw, frame.image, reference)


_taker: SampleTaker | None = None


def _worker_init(root: Path, settings: CaptureSettings) -> None:
    global _taker
    _taker = SampleTaker(root, settings)


def _worker_take(index: int) -> tuple[dict[str, Any], float]:
    assert _taker is not None
    return _taker.take(_taker.plan.rows[index])


def shard_ranges(plan: Plan) -> list[list[int]]:
    n, size = len(plan.rows), plan.shard_size
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


def run_capture(
    root: Path,
    settings: CaptureSettings,
    *,
    workers: int = 1,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> CaptureResult:
    """Capture every planned sample not yet written. `on_progress(done, failed, total)` after each."""
    with DatasetFolder(root).writing():
        return _run_capture(root, settings, workers=workers, on_progress=on_progress)


def _run_capture(
    root: Path,
    settings: CaptureSettings,
    *,
    workers: int,
    on_progress: Callable[[int, int, int], None] | None,
) -> CaptureResult:
    folder = DatasetFolder(root)
    plan = folder.plan()
    written = folder.reconcile()
    recaptured = folder.dropped
    part = read_part(root)
    mine = part.indices(plan) if part is not None else [r.index for r in plan.rows]  # a part: its shards only
    todo = [i for i in mine if i not in written]
    shards = shard_ranges(plan)
    shard_of = {i: k for k, rng in enumerate(shards) for i in rng}
    done = set(written)
    failed: dict[int, str] = {}
    isp_seconds = 0.0
    start = time.perf_counter()

    def pack_ready(index: int) -> None:
        k = shard_of[index]
        if all(i in done for i in shards[k]) and not folder.shard_path(k).exists():
            folder.pack_shard(k, shards[k])

    for k, rng in enumerate(shards):  # a crash may have come between the last sample and packing
        if all(i in done for i in rng) and not folder.shard_path(k).exists():
            folder.pack_shard(k, rng)

    def record(row: dict[str, Any], busy: float) -> None:
        nonlocal isp_seconds
        folder.append_rows([row])
        if row["status"] == "done":
            done.add(row["index"])
            isp_seconds += busy
            pack_ready(row["index"])
        else:
            failed[row["index"]] = row["error"]
        if on_progress:
            on_progress(len(done), len(failed), len(mine))

    if on_progress:
        on_progress(len(done), 0, len(mine))
    restored = None
    if workers <= 1:
        taker = SampleTaker(root, settings)
        try:
            taker.check_capabilities()
            for index in todo:
                record(*taker.take(plan.rows[index]))
        finally:
            restored = taker.close(restore=settings.restore)
    else:
        if settings.driver != "sim":
            raise HilTuneError("--workers > 1 is for the simulator; a hardware device is driven by one process")
        probe = SampleTaker(root, settings)
        try:
            probe.check_capabilities()
        finally:
            probe.close()
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs a progress thread
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(root, settings)) as pool:
            pending: set[Future[tuple[dict[str, Any], float]]] = set()
            queue = list(todo)
            try:
                while queue or pending:
                    while queue and len(pending) < 2 * workers:  # bounded: a Ctrl-C cancels little
                        pending.add(pool.submit(_worker_take, queue.pop(0)))
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        record(*fut.result())
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    return CaptureResult(len(mine), len(done), failed, time.perf_counter() - start, isp_seconds, restored, recaptured)
