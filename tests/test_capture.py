"""Sweep capture on the simulator: the plan, the dataset format, resume after SIGKILL, workers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from capture_helpers import fast_profile

from hil_tune.capture.dataset import DatasetFolder, DatasetReader
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.errors import InputError
from hil_tune.isp import SyntheticISP
from hil_tune.profiles import load_profile

SOURCES = ["bundled:coffee", "bundled:chelsea", "bundled:rocket"]


@pytest.fixture
def profile_path(tmp_path):
    return fast_profile(tmp_path)


def make(tmp_path, profile_path, name="ds", m=4, **kw):
    prof = load_profile(profile_path)
    plan = build_plan(prof, resolve_sources(SOURCES), samples_per_source=m, patch=32, region="fast", shard_size=5, **kw)
    folder = DatasetFolder(tmp_path / name)
    folder.create(plan)
    return folder, plan


def settings(profile_path, **kw):
    return CaptureSettings(driver="sim", profile=str(profile_path), driver_options={"sensor_size": 32}, **kw)


def test_plan_is_deterministic_latin_and_inside_the_region(tmp_path, profile_path):
    prof = load_profile(profile_path)
    srcs = resolve_sources(SOURCES)
    a = build_plan(prof, srcs, samples_per_source=8, patch=64, region="fast", seed=3)
    b = build_plan(prof, srcs, samples_per_source=8, patch=64, region="fast", seed=3)
    c = build_plan(prof, srcs, samples_per_source=8, patch=64, region="fast", seed=4)
    assert a == b and a.rows != c.rows
    region = prof.get_region("fast")
    enc = np.array([r.encoded for r in a.rows])
    slack = 0.5 / np.array([s.size - 1 if s.kind == "grid" else s.size for s in prof.space])  # grid snapping
    assert (enc >= np.array(region.lower) - slack).all() and (enc <= np.array(region.upper) + slack).all()
    assert {r.params["filter-strength"] for r in a.rows} == {0.0}
    # Latin: per source, each of 8 strata of gain-r's range holds exactly one sample (before snapping).
    j = prof.space.names.index("gain-r")
    lo, hi = region.lower[j], region.upper[j]
    for src in ("bundled:coffee", "bundled:rocket"):
        u = np.array([r.encoded[j] for r in a.rows if r.source == src])
        strata = np.floor((u - lo) / (hi - lo) * 8 - 1e-9).clip(0, 7)
        assert len(set(strata.tolist())) >= 7  # snapping to the 0.01 grid may move one across an edge
    # Patches keep an even offset (the CFA phase) and cycle through the source.
    assert all(r.patch[0] % 2 == 0 and r.patch[1] % 2 == 0 for r in a.rows)
    assert len({r.patch for r in a.rows if r.source == "bundled:coffee"}) == 8


def test_around_region_samples_near_the_given_sets(tmp_path, profile_path):
    prof = load_profile(profile_path)
    center = {"gain-r": 2.0, "digital-gain": 1.2}
    plan = build_plan(prof, resolve_sources(SOURCES[:1]), samples_per_source=6, patch=64, around=[center], radius=0.05)
    assert plan.region.name == "around" and plan.region.radius == 0.05
    u0 = prof.space.encode(prof.space.validate(center)[0])
    for row in plan.rows:
        assert np.abs(np.array(row.encoded) - u0).max() <= 0.05 + 0.01


def test_a_sweep_writes_every_planned_sample_once_with_its_data(tmp_path, profile_path):
    folder, plan = make(tmp_path, profile_path)
    result = run_capture(folder.root, settings(profile_path))
    assert result.written == result.planned == 12 and not result.failed
    reader = DatasetReader(folder.root)
    assert reader.indices == list(range(12))
    assert sorted(p.name for p in (folder.root / "shards").iterdir()) == ["00000.tar", "00001.tar", "00002.tar"]
    assert not list((folder.root / "pending").iterdir())
    assert reader.verify() == []
    isp = SyntheticISP(load_profile(profile_path))
    from hil_tune.capture.sources import load_source

    for index in (0, 7):
        s, row = reader.sample(index, check=True), plan.rows[index]
        assert s.meta["params_requested"] == row.params == s.meta["params_applied"]
        frame = load_source(resolve_sources([row.source])[0], load_profile(profile_path), 0).crop(*row.patch)
        assert np.array_equal(s.raw, frame.mosaic) and s.meta["cfa"] == frame.cfa
        assert np.array_equal(s.output, isp.run_frame(frame, row.params))  # what the ISP made, bit for bit
        assert np.array_equal(s.reference, np.round(frame.reference * 255).astype(np.uint8))
        assert s.meta["device"]["driver"] == "sim" and s.meta["profile_sha256"] == plan.profile_sha256
    rows = [json.loads(x) for x in (folder.root / "manifest.jsonl").read_text().splitlines()]
    assert all(r["host_time_ns"] > 0 for r in rows)


def test_corruption_is_found_by_verify(tmp_path, profile_path):
    folder, _ = make(tmp_path, profile_path, m=2)
    run_capture(folder.root, settings(profile_path))
    from hil_tune.capture.dataset import index_tar

    shard = folder.root / "shards" / "00000.tar"
    where = index_tar(shard)
    for member, expected in (("out.png", "out.png fails its checksum"), ("json", "member json fails its checksum")):
        data = bytearray(shard.read_bytes())
        offset, size = where[1][member]
        data[offset + size // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        problems = DatasetReader(folder.root).verify()
        assert len(problems) == 1 and problems[0].startswith("sample 1") and expected in problems[0], problems
        data[offset + size // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    assert DatasetReader(folder.root).verify() == []


def _cli_capture(out: Path, profile_path: Path, *extra: str) -> subprocess.Popen:
    args = ["capture", "--out", str(out), "--profile", str(profile_path), "--region", "fast", "--patch", "32",
            "-m", "5", "--shard-size", "4", "-o", "sensor_size=32", "-o", "latency_s=0.02",
            *[a for s in SOURCES for a in ("--source", s)], *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "hil_tune.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _dataset_fingerprint(root: Path) -> tuple[dict[str, bytes], list[tuple]]:
    shards = {p.name: p.read_bytes() for p in sorted((root / "shards").iterdir())}
    rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
    latest = {r["index"]: (r["index"], r["status"], r["file"]) for r in rows}
    return shards, sorted(latest.values())


@pytest.mark.parametrize("kill_seed", [1, 2])
def test_sigkill_at_a_random_point_then_resume_gives_the_identical_dataset(tmp_path, profile_path, kill_seed):
    whole = _cli_capture(tmp_path / "whole", profile_path)
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()
    killed_dir = tmp_path / "killed"
    proc = _cli_capture(killed_dir, profile_path)
    target = random.Random(kill_seed).randrange(1, 14)  # samples written before the kill (of 15)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pending = list((killed_dir / "pending").glob("*.tar")) if (killed_dir / "pending").is_dir() else []
        shards = list((killed_dir / "shards").glob("*.tar")) if (killed_dir / "shards").is_dir() else []
        if len(pending) + 4 * len(shards) >= target:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written_before = len(DatasetReader(killed_dir))
    assert 0 < written_before < 15, "the kill must land mid-sweep"
    again = _cli_capture(killed_dir, profile_path, "--resume")
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()
    assert "resuming" in again.stderr.read().decode()
    assert _dataset_fingerprint(killed_dir) == _dataset_fingerprint(tmp_path / "whole")
    assert DatasetReader(killed_dir).verify() == []


def test_two_workers_write_the_same_dataset_as_one(tmp_path, profile_path):
    one, _ = make(tmp_path, profile_path, name="one")
    two, _ = make(tmp_path, profile_path, name="two")
    run_capture(one.root, settings(profile_path))
    run_capture(two.root, settings(profile_path), workers=2)
    assert _dataset_fingerprint(one.root)[0] == _dataset_fingerprint(two.root)[0]


def test_full_disk_is_a_clear_error_and_leaves_nothing_corrupt(tmp_path, profile_path):
    out = tmp_path / "full"
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))  # one sample fits, a shard of two not
from hil_tune.cli import main
sys.argv = ["hil-tune", "capture", "--out", {str(out)!r}, "--profile", {str(profile_path)!r}, "--region", "fast",
            "--patch", "64", "-m", "6", "--shard-size", "2", "-o", "sensor_size=32", "--source", "bundled:coffee"]
main()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "cannot write" in res.stderr and "File too large" in res.stderr
    reader = DatasetReader(out)
    assert 0 < len(reader) < 6 and reader.verify() == []
    assert not list(out.rglob("*.tmp"))
    res = subprocess.run([sys.executable, "-m", "hil_tune.cli", "capture", "--out", str(out), "--resume",
                          "--profile", str(profile_path), "-o", "sensor_size=32"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(DatasetReader(out)) == 6 and DatasetReader(out).verify() == []


def test_bad_destinations_are_refused_before_any_capture(tmp_path, profile_path):
    folder, _ = make(tmp_path, profile_path, m=1)
    base = [
        sys.executable,
        "-m",
        "hil_tune.cli",
        "capture",
        "--profile",
        str(profile_path),
        "--region",
        "fast",
        "--source",
        "bundled:coffee",
        "-m",
        "1",
        "--patch",
        "32",
    ]
    res = subprocess.run([*base, "--out", str(folder.root)], capture_output=True, text=True)
    assert res.returncode == 2 and "already holds a dataset: add --resume" in res.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = subprocess.run([*base, "--out", str(blocker / "ds"), "--patch", "32"], capture_output=True, text=True)
    assert res.returncode == 2 and "cannot create dataset folder" in res.stderr
    res = subprocess.run([*base, "--out", str(folder.root), "--resume", "--seed", "9"], capture_output=True, text=True)
    assert res.returncode == 2 and "differ from the dataset's plan" in res.stderr


def test_unprocessing_draws_are_separate_cameras_of_one_photo(tmp_path, profile_path):
    """NAME@K: K unprocessings of one photo (own white balance, matrix, noise), one reference; the
    sweep records each draw and renders exactly that draw's RAW."""
    from hil_tune.capture.sources import load_source, photo_of, source_from_id
    from hil_tune.train.data import split_by_source

    srcs = resolve_sources(["bundled:coffee@3", "bundled:rocket"])
    assert [s.id for s in srcs] == ["bundled:coffee", "bundled:coffee#1", "bundled:coffee#2", "bundled:rocket"]
    assert [source_from_id(s.id) for s in srcs] == srcs == resolve_sources([s.id for s in srcs])
    prof = load_profile(profile_path)
    frames = [load_source(s, prof, 0) for s in srcs[:3]]
    gains = {f.meta["ideal_params"]["gain-r"] for f in frames}
    assert len(gains) == 3, "each draw is another camera"
    assert all(np.array_equal(frames[0].reference, f.reference) for f in frames)
    assert not np.array_equal(frames[0].mosaic, frames[1].mosaic)
    # draws of one photo never straddle a split
    for seed in range(6):
        train, val = split_by_source([s.id for s in srcs] + ["bundled:chelsea#1", "bundled:chelsea"], 0.4, seed)
        assert {photo_of(i) for i in train}.isdisjoint({photo_of(i) for i in val})

    plan = build_plan(prof, srcs[1:3], samples_per_source=2, patch=32, region="fast")
    folder = DatasetFolder(tmp_path / "draws")
    folder.create(plan)
    run_capture(folder.root, settings(profile_path))
    reader = DatasetReader(folder.root)
    for row in plan.rows:
        frame = load_source(source_from_id(row.source), prof, 0).crop(*row.patch)
        assert np.array_equal(reader.sample(row.index).raw, frame.mosaic), row.source


def test_draws_are_refused_where_there_is_one_camera(tmp_path):
    with pytest.raises(InputError, match="draws apply to sRGB and bundled photos"):
        resolve_sources(["live@2"])
    with pytest.raises(InputError, match="at least one"):
        resolve_sources(["bundled:coffee@0"])


def test_sources_are_checked(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_sources([str(tmp_path / "nope.dng")])
    with pytest.raises(InputError, match="given twice"):
        resolve_sources(["bundled:coffee", "bundled:coffee"])
    with pytest.raises(InputError, match="no bundled image"):
        resolve_sources(["bundled:nope"])


def test_live_sensor_source_records_the_devices_own_frames(tmp_path, profile_path):
    prof = load_profile(profile_path)
    plan = build_plan(prof, resolve_sources(["live"]), samples_per_source=3, patch=32, region="fast")
    assert plan.rows[0].patch is None
    folder = DatasetFolder(tmp_path / "live")
    folder.create(plan)
    result = run_capture(folder.root, settings(profile_path))
    assert result.written == 3
    sample = DatasetReader(folder.root).sample(2, check=True)
    assert sample.output.shape == (32, 32, 3) and sample.raw.shape == (32, 32) and sample.reference is None
    assert sample.meta["params_applied"] == plan.rows[2].params


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, profile_path):
    """Two captures into one folder: the second gets one line naming the first's PID, and the
    dataset the first writes is whole."""
    longer = ("-m", "40", "-o", "latency_s=0.05")  # a sweep of some seconds, so that the two overlap
    first = _cli_capture(tmp_path / "ds", profile_path, *longer)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ds" / "manifest.jsonl").exists() or not (tmp_path / "ds" / "manifest.jsonl").stat().st_size:
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = _cli_capture(tmp_path / "ds", profile_path, *longer, "--resume")
    _, err = second.communicate(timeout=120)
    assert first.wait(timeout=300) == 0
    assert second.returncode == 2 and f"another capture (PID {first.pid})" in err.decode(), err
    assert DatasetReader(tmp_path / "ds").verify() == []
    # With the first finished, the lock is free again: a resume finds nothing left to do.
    third = _cli_capture(tmp_path / "ds", profile_path, *longer, "--resume")
    assert third.wait(timeout=120) == 0
