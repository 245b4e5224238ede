"""Capture against the serial emulator while it drops, corrupts, goes silent and is unplugged:
no sample lost, none duplicated, each one made with its own parameters."""

from __future__ import annotations

import threading
import time

import numpy as np
from capture_helpers import BOARD_FAST, fast_profile

from hil_tune.capture.dataset import DatasetFolder, DatasetReader, read_tar
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.serial_pty import SerialEmulator
from hil_tune.isp import SyntheticISP
from hil_tune.profiles import load_profile

SOURCES = ["bundled:coffee", "bundled:chelsea", "bundled:rocket"]


def setup(tmp_path, m=4):
    prof = load_profile(fast_profile(tmp_path, BOARD_FAST))
    plan = build_plan(prof, resolve_sources(SOURCES), samples_per_source=m, patch=32, region="fast", shard_size=4)
    folder = DatasetFolder(tmp_path / "ds")
    folder.create(plan)
    fw = BoardFirmware(sensor_size=32, power_on={"filter-strength": 0.0})
    return prof, plan, folder, fw


def settings(tmp_path, link, retries=6):
    return CaptureSettings(
        driver="serial", profile=str(tmp_path / "fast.toml"), retries=retries, backoff_s=0.1,
        driver_options={"device": str(link), "attempt_timeout": 0.2, "timeout": 3.0},
    )  # fmt: skip


def check_complete(prof, plan, folder):
    reader = DatasetReader(folder.root)
    assert reader.verify() == []
    seen = []
    for shard in sorted((folder.root / "shards").glob("*.tar")):
        seen += list(read_tar(shard))
    assert sorted(seen) == list(range(len(plan.rows))), "lost or duplicated samples"
    isp = SyntheticISP(prof)
    for index in range(len(plan.rows)):
        s, row = reader.sample(index, check=True), plan.rows[index]
        frame = load_source(resolve_sources([row.source])[0], prof, 0).crop(*row.patch)
        assert s.meta["params_applied"] == row.params
        assert np.array_equal(s.output, isp.run_frame(frame, row.params)), f"sample {index} made with other settings"


def test_faults_mid_sweep_lose_and_duplicate_nothing(tmp_path):
    prof, plan, folder, fw = setup(tmp_path)
    link = tmp_path / "board"
    with SerialEmulator(fw, link=link) as emu:

        def saboteur():
            steps = [
                lambda: setattr(emu.faults, "drop_requests", 2),
                lambda: setattr(emu.faults, "drop_replies", 2),
                lambda: setattr(emu.faults, "corrupt_replies", 2),
                lambda: setattr(emu.faults, "corrupt_requests", 2),
                lambda: setattr(emu.faults, "truncate_replies", 1),
                lambda: setattr(emu.faults, "garbage", b"\x55\xaa\x00\x13"),
            ]
            for step in steps:
                start = emu.requests
                while emu.requests < start + 15:
                    time.sleep(0.002)
                step()
            start = emu.requests
            while emu.requests < start + 20:
                time.sleep(0.002)
            emu.faults.silent = True  # goes quiet for a while
            time.sleep(0.5)
            emu.faults.silent = False
            start = emu.requests
            while emu.requests < start + 20:
                time.sleep(0.002)
            emu.unplug()  # the cable comes out...
            time.sleep(0.6)
            emu.replug()  # ...and goes back in (same /dev/hil-tune-style link)

        thread = threading.Thread(target=saboteur, daemon=True)
        thread.start()
        result = run_capture(folder.root, settings(tmp_path, link))
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert result.failed == {} and result.written == len(plan.rows) == 12
    rows = folder.latest_rows()
    assert max(r["attempts"] for r in rows.values()) > 1, "the faults should have cost retries"
    check_complete(prof, plan, folder)


def test_a_sample_that_keeps_failing_is_recorded_then_retried_on_resume(tmp_path):
    prof, plan, folder, fw = setup(tmp_path, m=2)
    link = tmp_path / "board"
    with SerialEmulator(fw, link=link) as emu:
        emu.faults.unplug_after = 40  # unplugged mid-sweep and not plugged back
        result = run_capture(folder.root, settings(tmp_path, link, retries=2))
        assert result.failed, "samples after the unplug must fail"
        first_failed = min(result.failed)
        assert "DeviceDisconnected" in result.failed[first_failed] or "DeviceNotFound" in result.failed[first_failed]
        assert result.written + len(result.failed) == len(plan.rows)
        assert DatasetReader(folder.root).verify() == []
        assert set(DatasetReader(folder.root).failed()) == set(result.failed)
        emu.replug()
        again = run_capture(folder.root, settings(tmp_path, link))
    assert again.failed == {} and again.written == len(plan.rows)
    check_complete(prof, plan, folder)


def _held(tmp_path, link, prof):
    from hil_tune.drivers.registry import create_driver

    driver = create_driver("serial", prof, device=str(link), timeout=3.0)
    driver.open()
    try:
        return driver.get_params()
    finally:
        driver.close()


def test_a_sweep_puts_the_device_back_on_what_it_held(tmp_path):
    """Stage / unstage: after the sweep (even a faulty one) the board holds its pre-sweep setting;
    `restore=False` leaves it on the sweep's last setting."""
    prof, plan, folder, fw = setup(tmp_path, m=2)
    link = tmp_path / "board"
    with SerialEmulator(fw, link=link) as emu:
        before = _held(tmp_path, link, prof)
        emu.faults.drop_replies = 2
        result = run_capture(folder.root, settings(tmp_path, link))
        assert result.failed == {} and result.restored is True
        assert _held(tmp_path, link, prof) == before
        assert plan.rows[-1].params != before  # the sweep did move the board
        other = DatasetFolder(tmp_path / "ds2")
        other.create(plan)
        kept = run_capture(other.root, CaptureSettings(**{**settings(tmp_path, link).__dict__, "restore": False}))
        assert kept.restored is None
        assert _held(tmp_path, link, prof) == plan.rows[-1].params
