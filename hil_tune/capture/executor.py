"""A simulator sweep split into parts, run as tasks of an executor, then merged.

Why Dask (distributed) and not a home-made scheduler or Ray: a part is one coarse, independent
task (minutes of BM3D), so what is needed is an existing engine that starts workers on this
machine (`LocalCluster`) or on many (`dask scheduler` / `dask worker`, or any deployment that
hands back a scheduler address), ships a function and its arguments, and reports failures. Dask
does that as a pure-Python, pip-installed package; Ray brings a large native runtime and its own
object store that a task writing files to a folder does not use.

Each part is its own resumable folder (OUT.parts/part-K-of-N) and is merged with
`capture.merge` once all are complete, so the result is byte-identical to one capture of the plan
whatever the executor. Workers must see the same filesystem as the caller (a local cluster
always does; on several machines, a shared mount). Without one, capture `--part K/N` on each
machine and `dataset merge` the folders instead.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.merge import Merged, merge_parts
from hil_tune.capture.parts import Part, read_part, write_part
from hil_tune.capture.plan import Plan
from hil_tune.errors import HilTuneError, InputError

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class PartsResult:
    merged: Merged | None  # None when a part has failed samples (nothing is merged)
    parts: dict[str, dict[str, Any]]  # folder -> {"written", "planned", "failed"}


def part_folders(out: Path, n: int) -> list[Path]:
    return [out.parent / f"{out.name}.parts" / f"part-{k}-of-{n}" for k in range(1, n + 1)]


def prepare_parts(out: Path, plan: Plan, n: int) -> list[Path]:
    """The part folders of one plan (created once; a rerun continues them)."""
    folders = part_folders(out, n)
    for k, folder in enumerate(folders, start=1):
        if DatasetFolder(folder).exists():
            held = DatasetFolder(folder).plan()
            if held != plan or read_part(folder) != Part(k, n):
                raise InputError(f"{folder}: holds another plan or part; remove it or choose another --out")
            continue
        write_part(folder, Part(k, n), plan)
        DatasetFolder(folder).create(plan)
    return folders


def capture_part(folder: str, settings: CaptureSettings) -> dict[str, Any]:
    """One task: capture (or resume) one part folder. Top-level, so any executor can ship it."""
    result = run_capture(Path(folder), settings)
    return {"written": result.written, "planned": result.planned, "failed": result.failed}


def run_parts(
    out: Path,
    plan: Plan,
    settings: CaptureSettings,
    n: int,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
) -> PartsResult:
    """Capture `plan` as `n` parts on `executor` (local processes, or Dask: a LocalCluster of
    `workers` processes, or the cluster at `scheduler`), then merge them into `out`."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if settings.driver != "sim":
        raise HilTuneError("--parts runs simulator sweeps; on rigs, capture --part K/N on each and `dataset merge`")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder")
    folders = [str(f) for f in prepare_parts(out, plan, n)]
    run = _on_dask if executor == "dask" else _on_processes
    results = dict(zip(folders, run(folders, settings, workers or n, scheduler), strict=True))
    if any(r["failed"] for r in results.values()):
        return PartsResult(None, results)
    return PartsResult(merge_parts(out, [Path(f) for f in folders]), results)


def _on_processes(folders: list[str], settings: CaptureSettings, workers: int, _: str | None) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(folders)), mp_context=ctx) as pool:
        return list(pool.map(capture_part, folders, [settings] * len(folders)))


def _on_dask(folders: list[str], settings: CaptureSettings, workers: int, scheduler: str | None) -> list[dict]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise HilTuneError("--executor dask needs the distributed package: pip install hil-tune[distributed]") from None
    if scheduler is not None:
        with Client(scheduler) as client:
            return client.gather(client.map(capture_part, folders, settings=settings, pure=False))
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        return client.gather(client.map(capture_part, folders, settings=settings, pure=False))
