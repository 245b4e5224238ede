"""The sweep dataset on disk: tar shards of samples, a JSON-lines manifest, the plan. No pickle.

    DATASET/plan.json             the plan, written before the first capture
    DATASET/manifest.jsonl        one row per sample outcome (done / failed), timings; last row wins
    DATASET/pending/NNNNNNNN.tar  a finished sample not yet packed (one small tar each)
    DATASET/shards/SSSSS.tar      final, immutable: plan indices [S*size, (S+1)*size) in order

Every file appears by write-to-temp, fsync, rename: a crash leaves either the old state or the new
one, never half a file. A sample counts as written once its pending tar (or its shard) exists; a
shard is packed only when every sample of its range is written, so shard bytes do not depend on
how often the run was interrupted. Sample members are byte-deterministic (fixed tar headers,
PNG/NPY encoders without timestamps); host and device timestamps live in the manifest only.
Why tar: the WebDataset layout streams from any store sequentially and indexes locally for random
access, and every tool can open it. See docs/dataset.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hil_tune.atomic import atomic_write as _atomic_write
from hil_tune.atomic import fsync_dir
from hil_tune.capture.plan import Plan
from hil_tune.errors import HilTuneError
from hil_tune.isp.firmwares import FIRMWARES
from hil_tune.raw import RawFrame

PLAN = "plan.json"
MANIFEST = "manifest.jsonl"
PENDING = "pending"
SHARDS = "shards"
QUARANTINE = "quarantine"  # shards that held a corrupt sample, kept for inspection
MEMBERS = ("json", "raw.npy", "out.png", "ref.png")


class DatasetError(HilTuneError):
    """A dataset folder is missing, unwritable, from another plan, or fails verification."""


# -- atomic files ------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    _atomic_write(path, data, DatasetError)


# -- samples -------------------------------------------------------------------------------------


@dataclass
class Sample:
    index: int
    meta: dict[str, Any]
    raw: np.ndarray | None  # (H, W) uint16 mosaic; pack with hil_tune.raw.pack3/pack4 and meta["cfa"]
    output: np.ndarray  # (H, W, 3) uint8, what the ISP produced
    reference: np.ndarray | None  # (H, W, 3) uint8 for unprocessed sources

    def frame(self) -> RawFrame:
        """The RAW patch with its CFA and levels (a live sensor that recorded none: 16-bit full scale)."""
        if self.raw is None:
            raise DatasetError(f"sample {self.index}: the device gave no RAW")
        black = self.meta.get("black_level") or (0.0, 0.0, 0.0, 0.0)
        white = self.meta.get("white_level") or float(np.iinfo(np.uint16).max)
        levels = (float(black[0]), float(black[1]), float(black[2]), float(black[3]))
        return RawFrame(mosaic=self.raw, cfa=self.meta["cfa"], black_level=levels, white_level=float(white))


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_sample(sample: Sample) -> dict[str, bytes]:
    """Members of one sample; the JSON member carries the SHA-256 of every other member."""
    members: dict[str, bytes] = {"out.png": _png(sample.output)}
    if sample.raw is not None:
        members["raw.npy"] = _npy(sample.raw)
    if sample.reference is not None:
        members["ref.png"] = _png(sample.reference)
    meta = {
        **sample.meta,
        "index": sample.index,
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()},
    }
    members["json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return members


def json_digest(members: dict[str, bytes]) -> str:
    """The SHA-256 of a sample's JSON member, which the manifest row records: with the digests the
    JSON carries for every other member, every byte of a sample is covered by a checksum."""
    return hashlib.sha256(members.get("json", b"")).hexdigest()


def check_members(index: int, members: dict[str, bytes], row: dict[str, Any] | None = None) -> None:
    """Raise DatasetError naming the sample and member when a checksum fails: the JSON member
    against the manifest row's `json_sha256` (rows written before it existed have none), every
    other member against the digest the JSON carries. Hashing only; nothing is decoded."""
    want = (row or {}).get("json_sha256")
    if want is not None and json_digest(members) != want:
        raise DatasetError(f"sample {index}: member json fails its checksum (manifest)")
    try:
        meta = json.loads(members["json"])
    except (KeyError, ValueError) as err:
        raise DatasetError(f"sample {index}: metadata missing or unreadable ({err})") from None
    digests = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(digests, dict):
        raise DatasetError(f"sample {index}: metadata carries no checksums")
    for name, digest in digests.items():
        if name not in members:
            raise DatasetError(f"sample {index}: member {name} missing")
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise DatasetError(f"sample {index}: member {name} fails its checksum")


def decode_sample(
    index: int, members: dict[str, bytes], *, check: bool = True, row: dict[str, Any] | None = None
) -> Sample:
    if check:
        check_members(index, members, row)
    try:
        meta = json.loads(members["json"])
    except (KeyError, ValueError) as err:
        raise DatasetError(f"sample {index}: metadata missing or unreadable ({err})") from None
    try:
        raw = np.load(io.BytesIO(members["raw.npy"]), allow_pickle=False) if "raw.npy" in members else None
        out = np.asarray(Image.open(io.BytesIO(members["out.png"])).convert("RGB"))
        ref = np.asarray(Image.open(io.BytesIO(members["ref.png"])).convert("RGB")) if "ref.png" in members else None
    except (KeyError, OSError, ValueError) as err:
        raise DatasetError(f"sample {index}: a member cannot be decoded ({err})") from None
    return Sample(index, meta, raw, out, ref)


def key(index: int) -> str:
    return f"{index:08d}"


def tar_bytes(samples: list[tuple[int, dict[str, bytes]]]) -> bytes:
    """A tar whose bytes depend only on the content: fixed owner, mode and time, sorted members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index, members in sorted(samples, key=lambda s: s[0]):
            for suffix in MEMBERS:
                if suffix not in members:
                    continue
                info = tarfile.TarInfo(f"{key(index)}.{suffix}")
                info.size, info.mtime, info.mode, info.uid, info.gid = len(members[suffix]), 0, 0o644, 0, 0
                tar.addfile(info, io.BytesIO(members[suffix]))
    return buf.getvalue()


def read_tar(path: Path) -> dict[int, dict[str, bytes]]:
    """All samples of a tar (pending or shard); raises DatasetError if the file is not a whole tar."""
    out: dict[int, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                index = _member_index(path, info)
                f = tar.extractfile(info)
                assert f is not None
                out.setdefault(index, {})[info.name.partition(".")[2]] = f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: not a complete tar ({err})") from None
    return out


def index_tar(path: Path) -> dict[int, dict[str, tuple[int, int]]]:
    """Member offsets for random access without reading the data."""
    out: dict[int, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                out.setdefault(_member_index(path, info), {})[info.name.partition(".")[2]] = (
                    info.offset_data,
                    info.size,
                )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: not a complete tar ({err})") from None
    return out


def _member_index(path: Path, info: tarfile.TarInfo) -> int:
    """The sample index a member holds, or DatasetError for any name a writer of ours never makes
    (a path, `..`, a link, another suffix): such a member is never read, nor extracted."""
    stem, _, suffix = info.name.partition(".")
    if not stem.isdigit() or suffix not in MEMBERS or not info.isfile():
        raise DatasetError(f"{path}: unexpected member {info.name!r} (not a sample file of a hil-tune shard)")
    return int(stem)


# -- the dataset folder --------------------------------------------------------------------------


class DatasetFolder:
    """Paths, plan, manifest and the reconciliation of what is really on disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN

    def exists(self) -> bool:
        return self.plan_path.is_file()

    def create(self, plan: Plan) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / PENDING).mkdir(exist_ok=True)
            (self.root / SHARDS).mkdir(exist_ok=True)
        except OSError as err:
            raise DatasetError(f"cannot create dataset folder {self.root}: {err.strerror or err}") from None
        atomic_write(self.plan_path, plan.model_dump_json(indent=1).encode())
        atomic_write(self.root / MANIFEST, b"")

    def plan(self) -> Plan:
        if not self.exists():
            raise DatasetError(f"{self.root}: not a hil-tune dataset (no {PLAN})")
        try:
            return Plan.model_validate_json(self.plan_path.read_bytes())
        except ValueError as err:
            raise DatasetError(f"{self.plan_path}: unreadable plan ({err})") from None

    def pending_path(self, index: int) -> Path:
        return self.root / PENDING / f"{key(index)}.tar"

    def shard_path(self, shard: int) -> Path:
        return self.root / SHARDS / f"{shard:05d}.tar"

    def manifest_rows(self) -> list[dict[str, Any]]:
        """Rows in order; a line torn by a crash (the last one) is skipped."""
        path = self.root / MANIFEST
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "index" in row:
                rows.append(row)
        return rows

    def latest_rows(self) -> dict[int, dict[str, Any]]:
        latest: dict[int, dict[str, Any]] = {}
        for row in self.manifest_rows():
            latest[int(row["index"])] = row
        return latest

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        try:
            with open(self.root / MANIFEST, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise DatasetError(f"cannot append to {self.root / MANIFEST}: {err.strerror or err}") from None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's writer lock (an exclusive flock on `.lock`, which records the PID) while
        a capture writes it: a second writer would sweep the whole plan again and leave the manifest
        pointing at its leftovers. The lock goes with the process, so a killed capture never leaves
        one behind."""
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise DatasetError(
                    f"{self.root}: another capture (PID {holder}) is writing this dataset; wait for it or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def reconcile(self) -> dict[int, str]:
        """Make the manifest agree with the files; returns index -> file of every written sample.

        Temp files are removed; a pending tar that is not whole or fails a checksum is removed (its
        sample is redone); failed rows are dropped so a resumed run retries them. Every shard is
        checked, once per call: a shard holding a sample that fails a checksum is moved to
        `quarantine/` (nothing is deleted), its sound samples go back to pending and the bad one is
        captured again; `self.dropped` says which and why.
        """
        for tmp in [*self.root.glob(".*.tmp"), *self.root.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)
        latest = self.latest_rows()
        self.dropped: list[str] = []
        written: dict[int, str] = {}
        for shard in sorted((self.root / SHARDS).glob("*.tar")):
            samples = read_tar(shard)
            bad = {}
            for index, members in samples.items():
                try:
                    check_members(index, members, latest.get(index))
                except DatasetError as err:
                    bad[index] = str(err)
            if not bad:
                written.update({i: str(shard.relative_to(self.root)) for i in samples})
                continue
            for index, members in samples.items():
                if index not in bad and not self.pending_path(index).exists():
                    atomic_write(self.pending_path(index), tar_bytes([(index, members)]))
            quarantine = self.root / QUARANTINE
            quarantine.mkdir(exist_ok=True)
            n = len(list(quarantine.glob(f"{shard.name}*")))
            os.replace(shard, quarantine / f"{shard.name}.{n}")
            fsync_dir(shard.parent)
            self.dropped += [f"{why}: captured again ({shard.name} kept in {QUARANTINE}/)" for why in bad.values()]
        digests: dict[int, str] = {}
        for pending in sorted((self.root / PENDING).glob("*.tar")):
            try:
                samples = read_tar(pending)
                for index, members in samples.items():
                    row = latest.get(index)
                    check_members(index, members, row if row and row.get("status") == "done" else None)
            except DatasetError:
                pending.unlink(missing_ok=True)
                continue
            if set(samples) != {int(pending.stem)}:
                pending.unlink(missing_ok=True)
                continue
            if int(pending.stem) in written:
                pending.unlink(missing_ok=True)  # packed already; the crash came before the clean-up
                continue
            written[int(pending.stem)] = str(pending.relative_to(self.root))
            digests[int(pending.stem)] = json_digest(samples[int(pending.stem)])
        rows = []
        for index, file in sorted(written.items()):
            # A sample written just before a kill, whose row never reached the manifest, gets its
            # checksum from its own bytes, as the row it missed would have carried.
            row = dict(latest.get(index, {"index": index, "recovered": True}))
            if index in digests and "json_sha256" not in row:
                row["json_sha256"] = digests[index]
            row.update(status="done", file=file)
            rows.append(row)
        atomic_write(self.root / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
        return written

    def pack_shard(self, shard: int, indices: list[int]) -> None:
        """Move the pending samples of one shard range into its final shard file."""
        samples = []
        for index in indices:
            got = read_tar(self.pending_path(index))
            samples.append((index, got[index]))
        atomic_write(self.shard_path(shard), tar_bytes(samples))
        file = str(self.shard_path(shard).relative_to(self.root))
        latest = self.latest_rows()
        self.append_rows([{**latest.get(i, {"index": i}), "status": "done", "file": file} for i in indices])
        for index in indices:
            self.pending_path(index).unlink(missing_ok=True)


class DatasetReader:
    """Random access to the written samples of a dataset (shards and pending alike).

    With `checked`, the first read from a shard or pending file checks the checksums of every
    sample in it (hashing, about a GB/s, once per file and process), so that training never learns
    from a corrupt sample: the error names the sample and the member."""

    def __init__(self, root: Path | str, *, checked: bool = False) -> None:
        self.folder = DatasetFolder(Path(root))
        self.plan = self.folder.plan()
        self.rows = {r.index: r for r in self.plan.rows}
        self.checked = checked
        self._sound: set[Path] = set()
        self._where: dict[int, tuple[Path, dict[str, tuple[int, int]]]] = {}
        for path in [
            *sorted((self.folder.root / SHARDS).glob("*.tar")),
            *sorted((self.folder.root / PENDING).glob("*.tar")),
        ]:
            try:
                for index, members in index_tar(path).items():
                    self._where.setdefault(index, (path, members))
            except (tarfile.TarError, OSError):
                continue
        self.indices = sorted(self._where)
        if checked:  # a tar whose later header is damaged just ends early: count against the manifest
            lost = self.missing()
            if lost:
                raise DatasetError(
                    f"{self.folder.root}: sample {lost[0]} (of {len(lost)}) is in the manifest but in no readable "
                    "file; run `hil-tune dataset verify`"
                )

    def missing(self) -> list[int]:
        """Samples the manifest marks done that no readable file holds (a shard deleted or damaged)."""
        rows = self.folder.latest_rows().items()
        return sorted(i for i, r in rows if r.get("status") == "done" and i not in self._where)

    def check_file(self, path: Path) -> None:
        """Check every sample this reader takes from `path` against its checksums (once)."""
        if path in self._sound:
            return
        latest = self.folder.latest_rows()
        for index, (where, _) in self._where.items():
            if where == path:
                try:
                    check_members(index, self.members(index), latest.get(index))
                except DatasetError as err:
                    raise DatasetError(
                        f"{self.folder.root}: {err}; `hil-tune capture --resume --out {self.folder.root}` "
                        "captures it again"
                    ) from None
        self._sound.add(path)

    def __len__(self) -> int:
        return len(self.indices)

    def members(self, index: int) -> dict[str, bytes]:
        path, members = self._where[index]
        out = {}
        with open(path, "rb") as f:
            for name, (offset, size) in members.items():
                f.seek(offset)
                out[name] = f.read(size)
        return out

    def sample(self, index: int, *, check: bool = False) -> Sample:
        if index not in self._where:
            raise DatasetError(f"{self.folder.root}: sample {index} is not written")
        if self.checked:
            self.check_file(self._where[index][0])
        return decode_sample(index, self.members(index), check=check)

    def __iter__(self) -> Iterator[Sample]:
        for index in self.indices:
            yield self.sample(index)

    def firmware_variant(self) -> str:
        """Which simulated ISP made the sweep: sim and the emulated board end their firmware string
        with the variant's name."""
        firmware = str(self.sample(self.indices[0]).meta["device"].get("firmware", ""))
        return next((name for name in FIRMWARES if firmware.endswith(f"-{name}")), "synthetic")

    def sources(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for index in self.indices:
            out.setdefault(self.rows[index].source, []).append(index)
        return out

    def failed(self) -> dict[int, dict[str, Any]]:
        return {
            i: r for i, r in self.folder.latest_rows().items() if r.get("status") == "failed" and i not in self._where
        }

    def verify(self) -> list[str]:
        """Every manifest 'done' row has its data, every checksum matches (the JSON member's is in
        the manifest), the plan's profile hashes to what the plan says, nothing unplanned is there."""
        problems = []
        try:
            self.plan.load_profile()  # recomputes the profile's hash against the plan's
        except (HilTuneError, ValueError) as err:
            problems.append(f"plan.json: {err}")
        latest = self.folder.latest_rows()
        for index, row in sorted(latest.items()):
            if row.get("status") != "done":
                continue
            if index not in self._where:
                problems.append(f"sample {index}: manifest says done in {row.get('file')}, but no file holds it")
                continue
            try:
                check_members(index, self.members(index), row)
                sample = self.sample(index)
            except DatasetError as err:
                problems.append(str(err))
                continue
            if sample.meta.get("params_requested") != self.rows[index].params:
                problems.append(f"sample {index}: parameters differ from the plan")
        problems += [f"sample {i}: on disk but not in the manifest" for i in self.indices if i not in latest]
        problems += [f"sample {i}: not in the plan" for i in self.indices if i not in self.rows]
        return problems
