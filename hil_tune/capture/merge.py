"""Join the parts of one plan, captured on several rigs or machines, into one dataset.

Why copying is enough: every part holds the same plan and owns whole shards (capture.parts), and a
shard's bytes depend only on its samples, so the merged folder holds exactly the files one
uninterrupted capture would (the manifest's rows are the parts' own, with their timings and the
device each sample came from, in index order).

Nothing is written unless every check passes: the same plan (its bytes' hash) and profile in every
part, every part's share as its part.json says, no index missing or present twice, every sample's
checksum, no failed sample. The merged folder is built beside OUT and renamed into place, so a crash
leaves either nothing or the whole dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hil_tune.atomic import fsync_dir
from hil_tune.capture.dataset import MANIFEST, PENDING, PLAN, SHARDS, DatasetError, DatasetFolder, DatasetReader
from hil_tune.capture.loop import shard_ranges
from hil_tune.capture.parts import PART, plan_digest, read_part


@dataclass(frozen=True)
class Merged:
    out: Path
    samples: int
    shards: int
    parts: list[str]


def _check_parts(parts: list[Path]) -> tuple[str, dict[int, Path]]:
    """(the plan's digest, shard number -> the part that holds it); DatasetError naming the part
    and the index for anything that would make the merged dataset differ from one capture."""
    if not parts:
        raise DatasetError("dataset merge: no part folders given")
    digests = {p: plan_digest(p) if DatasetFolder(p).exists() else None for p in parts}
    for p, d in digests.items():
        if d is None:
            raise DatasetError(f"{p}: not a hil-tune dataset (no {PLAN})")
    first = parts[0]
    for p in parts[1:]:
        if digests[p] != digests[first]:
            raise DatasetError(f"{p}: captured from another plan than {first} (plan.json differs)")
    plan = DatasetFolder(first).plan()
    owner: dict[int, Path] = {}  # plan index -> the part holding it
    for p in parts:
        _check_one(p, digests[p] or "")
        reader = DatasetReader(p)
        for index in reader.indices:
            if index in owner:
                raise DatasetError(f"sample {index} is in two parts: {owner[index]} and {p}")
            owner[index] = p
    missing = [r.index for r in plan.rows if r.index not in owner]
    if missing:
        raise DatasetError(
            f"{len(missing)} planned sample(s) are in no part (first: {missing[0]}); capture the missing part "
            "or resume the part that stopped"
        )
    holder: dict[int, Path] = {}
    for k, rng in enumerate(shard_ranges(plan)):
        part = owner[rng[0]]
        for index in rng:
            if owner[index] != part:
                raise DatasetError(f"shard {k} straddles {part} and {owner[index]} (sample {index})")
        if not DatasetFolder(part).shard_path(k).is_file():
            raise DatasetError(f"{part}: shard {k} is not packed yet; run `capture --resume --out {part}` to finish it")
        holder[k] = part
    return digests[first] or "", holder


def _check_one(part: Path, digest: str) -> None:
    share = read_part(part)
    if share is not None:
        recorded = json.loads((part / PART).read_text())["plan_sha256"]
        if recorded != digest:
            raise DatasetError(f"{part}: its part.json was written for another plan")
    reader = DatasetReader(part)
    problems = reader.verify()
    if problems:
        raise DatasetError(f"{part}: {problems[0]} ({len(problems)} problem(s); run `dataset verify` on it)")
    failed = reader.failed()
    if failed:
        index = min(failed)
        raise DatasetError(f"{part}: sample {index} failed on the device; `capture --resume --out {part}` retries it")


def merge_parts(out: Path, parts: list[Path]) -> Merged:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not empty; choose a new folder")
    _, holder = _check_parts([Path(p) for p in parts])
    rows = {}
    for p in parts:
        rows.update({i: r for i, r in DatasetFolder(Path(p)).latest_rows().items() if r.get("status") == "done"})
    staging = out.parent / f".{out.name}.merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / SHARDS).mkdir(parents=True)
        (staging / PENDING).mkdir()
        shutil.copyfile(Path(parts[0]) / PLAN, staging / PLAN)
        for k, part in sorted(holder.items()):
            shutil.copyfile(DatasetFolder(part).shard_path(k), staging / SHARDS / f"{k:05d}.tar")
        manifest = "".join(json.dumps(rows[i], sort_keys=True) + "\n" for i in sorted(rows))
        (staging / MANIFEST).write_text(manifest)
        for path in [*(staging / SHARDS).iterdir(), staging / PLAN, staging / MANIFEST]:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(staging / SHARDS)
        fsync_dir(staging)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Merged(out, len(rows), len(holder), [str(p) for p in parts])
