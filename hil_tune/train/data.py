"""Sweep datasets as torch datasets, and the split by source that keeps held-out images unseen.

Map-style (`SweepDataset`) for a dataset folder on local disk: random access through the tar
index. Iterable (`SweepStream`) for shards elsewhere (any file-like opener: an object store, a
network share): reads each shard front to back, once, as WebDataset readers do.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from hil_tune.capture.dataset import MEMBERS, DatasetReader, Sample, decode_sample
from hil_tune.capture.sources import photo_of
from hil_tune.raw import CFA_PATTERNS, pack3, pack4


def split_by_source(sources: Iterable[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[set[str], set[str]]:
    """(train, val) source ids, split by photo: every unprocessing draw of a photo lands on one side,
    or validation would score a scene the model trained on. Stable per photo (a CRC of its id), so
    adding a source does not move others."""
    ids = sorted(set(sources))
    photos = sorted({photo_of(i) for i in ids})
    if len(photos) < 2:
        raise ValueError("splitting by source needs at least two photos")
    ranked = sorted(photos, key=lambda s: (zlib.crc32(f"{seed}:{s}".encode()), s))
    n_val = min(len(photos) - 1, max(1, round(val_fraction * len(photos))))
    val_photos = set(ranked[:n_val])
    val = {i for i in ids if photo_of(i) in val_photos}
    return set(ids) - val, val


def to_tensors(sample: Sample, packing: str = "pack4") -> dict[str, Any]:
    """RAW normalised to [0, 1] and packed (pack4: 4 x H/2 x W/2, the default; pack3: the paper's
    3 x H x W by Bayer position), output and reference as 3 x H x W floats in [0, 1]."""
    meta = sample.meta
    frame = sample.frame()  # normalised exactly as the ISP normalises it
    norm = frame.normalized()
    packed = pack4(norm, frame.cfa) if packing == "pack4" else pack3(norm, frame.cfa)
    out = {
        "index": sample.index,
        "mosaic": torch.from_numpy(norm[None]),
        "cfa": CFA_PATTERNS.index(meta["cfa"]),
        "raw": torch.from_numpy(np.ascontiguousarray(packed.transpose(2, 0, 1))),
        "output": torch.from_numpy(sample.output.transpose(2, 0, 1).astype(np.float32) / 255),
        "encoded": torch.tensor(meta["encoded_applied"], dtype=torch.float32),
        "source": meta["source"],
    }
    if sample.reference is not None:
        out["reference"] = torch.from_numpy(sample.reference.transpose(2, 0, 1).astype(np.float32) / 255)
    return out


class SweepDataset(Dataset):
    """Map-style view of a local dataset folder, optionally restricted to some sources."""

    def __init__(self, root: Path | str, sources: set[str] | None = None, packing: str = "pack4") -> None:
        self.reader = DatasetReader(root, checked=True)  # never train on a corrupt sample
        self.packing = packing
        self.indices = [i for i in self.reader.indices if sources is None or self.reader.rows[i].source in sources]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return to_tensors(self.reader.sample(self.indices[i]), self.packing)

    def source_at(self, pos: int) -> str:
        return self.reader.rows[self.indices[pos]].source

    def split_sources(self) -> list[str]:
        """The sources the held-out photos are drawn from."""
        return sorted({self.source_at(p) for p in range(len(self))})

    def split_key(self, pos: int) -> str:
        """What a held-out-settings split hashes for the sample at `pos`: its plan index."""
        return str(self.indices[pos])


class SweepUnion(Dataset):
    """Several sweep datasets of one profile read as one: a refined proxy trains on the first sweep
    plus every round's samples. Split keys of the first part are its plain plan indices, so the
    first sweep splits exactly as it did alone (what a proxy held out stays held out)."""

    def __init__(self, roots: list[Path], packing: str = "pack4") -> None:
        self.parts = [SweepDataset(r, packing=packing) for r in roots]
        shas = {p.reader.plan.profile_sha256 for p in self.parts}
        if len(shas) > 1:
            names = ", ".join(f"{r} ({p.reader.plan.profile})" for r, p in zip(roots, self.parts, strict=True))
            raise ValueError(f"datasets captured with different profiles cannot train one proxy: {names}")
        self.where = [(k, pos) for k, part in enumerate(self.parts) for pos in range(len(part))]
        self.reader = self.parts[0].reader  # the first sweep: its region, firmware and held-out photos

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, pos = self.where[i]
        return self.parts[k][pos]

    def source_at(self, pos: int) -> str:
        k, at = self.where[pos]
        return self.parts[k].source_at(at)

    def split_sources(self) -> list[str]:
        """The first sweep's: adding a round's photos must not move which photos are held out."""
        return self.parts[0].split_sources()

    def split_key(self, pos: int) -> str:
        k, at = self.where[pos]
        key = self.parts[k].split_key(at)
        return key if k == 0 else f"{k}:{key}"


class SweepStream(IterableDataset):
    """Streams samples from shard files opened by `opener` (default: local files), in order.

    With several DataLoader workers, each reads every n-th shard, so no sample is read twice.
    """

    def __init__(
        self,
        shards: list[str],
        opener: Callable[[str], IO[bytes]] | None = None,
        sources: set[str] | None = None,
        packing: str = "pack4",
    ) -> None:
        self.shards, self.sources, self.packing = shards, sources, packing
        self.opener = opener or (lambda s: open(s, "rb"))  # noqa: SIM115 - closed by the with below

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for shard in mine:
            with self.opener(shard) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                current: dict[str, bytes] = {}
                current_key = None
                for member in tar:
                    stem, _, suffix = member.name.partition(".")
                    if suffix not in MEMBERS:
                        continue
                    if current_key is not None and stem != current_key:
                        yield from self._emit(current_key, current)
                        current = {}
                    current_key = stem
                    data = tar.extractfile(member)
                    current[suffix] = data.read() if data is not None else b""
                if current_key is not None:
                    yield from self._emit(current_key, current)

    def _emit(self, key: str, members: dict[str, bytes]) -> Iterator[dict[str, Any]]:
        sample = decode_sample(int(key), members, check=True)
        if self.sources is None or sample.meta["source"] in self.sources:
            yield to_tensors(sample, self.packing)


def read_bytes(path: str) -> IO[bytes]:
    """An opener that reads a whole shard into memory (what a remote fetch would hand back)."""
    return io.BytesIO(Path(path).read_bytes())
