"""Capture throughput on the simulator: samples/s pinned to one core and on all cores (worker
processes), and the loop's overhead over the bare ISP time for the same samples.

The same plan is captured five ways: the bare ISP on each planned patch (no driver, no dataset),
the capture loop with one process pinned to one core, the loop with one worker per core, and the
plan as 1 or 2 parts run as executor tasks and merged (capture --parts).
Writes benchmarks/results/capture.json and prints a table.
Usage: python benchmarks/capture.py [--samples-per-source M] [--patch P]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from provenance import header

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.executor import run_parts
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.isp import SyntheticISP
from hil_tune.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["bundled:coffee", "bundled:chelsea", "bundled:rocket", "bundled:astronaut"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples-per-source", type=int, default=10)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "capture.json")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    profile = load_profile("synthetic")
    plan = build_plan(
        profile, resolve_sources(SOURCES), samples_per_source=args.samples_per_source, patch=args.patch, shard_size=4
    )  # several shards, so the plan splits into parts
    n = len(plan.rows)

    os.sched_setaffinity(0, {cores[0]})  # one core for the bare ISP and the single-process loop
    isp = SyntheticISP(profile)
    frames = {s["id"]: load_source(resolve_sources([s["id"]])[0], profile, plan.seed) for s in plan.sources}
    t = time.perf_counter()
    for row in plan.rows:
        isp.run_frame(frames[row.source].crop(*row.patch), row.params)
    bare = time.perf_counter() - t

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers, affinity in (("one_core", 1, {cores[0]}), ("all_cores", len(cores), set(cores))):
            os.sched_setaffinity(0, affinity)  # worker processes inherit it
            folder = DatasetFolder(Path(tmp) / label)
            folder.create(plan)
            t = time.perf_counter()
            result = run_capture(folder.root, CaptureSettings("sim"), workers=workers)
            seconds = time.perf_counter() - t
            assert result.written == n and not result.failed
            runs[label] = {"workers": workers, "seconds": round(seconds, 3), "samples_per_s": round(n / seconds, 4)}
        os.sched_setaffinity(0, set(cores))
        for label, parts, executor in (("parts_1_local", 1, "local"), ("parts_2_dask", 2, "dask")):
            # the plan in parts, each a task (a Dask LocalCluster of `parts` workers), merged at the end
            t = time.perf_counter()
            got = run_parts(Path(tmp) / label, plan, CaptureSettings("sim"), parts, executor=executor)
            seconds = time.perf_counter() - t
            assert got.merged is not None and got.merged.samples == n
            runs[label] = {"parts": parts, "executor": executor, "seconds": round(seconds, 3),
                           "samples_per_s": round(n / seconds, 4)}  # fmt: skip
    overhead = runs["one_core"]["seconds"] / bare - 1
    scaling = runs["all_cores"]["samples_per_s"] / runs["one_core"]["samples_per_s"]
    result = {
        **header("capture", cores=len(cores)),
        "config": {
            "sources": SOURCES,
            "samples": n,
            "patch": args.patch,
            "region": plan.region.name,
            "bm3d_threads": profile.pipeline.bm3d_threads,
        },
        "bare_isp_seconds_one_core": round(bare, 3),
        "runs": runs,
        "loop_overhead_over_isp": round(overhead, 4),
        "all_cores_over_one_core": round(scaling, 3),
        "notes": "one_core: the loop in one process pinned to one core, same plan as the bare ISP run; "
        "all_cores: one spawned worker process per core (start-up included); parts_1_local / parts_2_dask: "
        "the plan as 1 part (a spawned process) or 2 parts (a Dask LocalCluster of 2 workers), merged, "
        "cluster start-up and merge included.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n} samples of {args.patch}x{args.patch}, region {plan.region.name}")
    print(f"{'bare ISP, one core':28} {bare:8.2f} s  {n / bare:6.3f} samples/s")
    for label, r in runs.items():
        name = f"loop, {label} ({r.get('workers', r.get('parts'))} {'proc' if 'workers' in r else 'parts'})"
        print(f"{name:28} {r['seconds']:8.2f} s  {r['samples_per_s']:6.3f} samples/s")
    print(f"loop overhead over the ISP: {overhead:+.1%}   all cores / one core: {scaling:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
