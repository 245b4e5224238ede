"""One plan captured in parts: on several rigs or machines, each part its own resumable folder.

Why whole shards: a shard is packed from its samples in index order, so a part that owns whole
shards packs exactly the shard files one uninterrupted capture would, and merging is copying
(hil_tune.capture.merge). Shards go to parts in contiguous blocks, as even as the count allows.

A part folder holds the whole plan (so it explains itself and a merge can check that every part
ran the same one) and `part.json`, which says which share it owns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hil_tune.atomic import atomic_write
from hil_tune.capture.plan import Plan
from hil_tune.errors import InputError

PART = "part.json"


@dataclass(frozen=True)
class Part:
    k: int  # 1-based
    n: int

    @classmethod
    def parse(cls, text: str) -> Part:
        """`K/N` as a user writes it: part K of N, 1 <= K <= N."""
        k, sep, n = text.partition("/")
        if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 1 <= int(k) <= int(n):
            raise InputError(f"--part {text!r}: expected K/N with 1 <= K <= N, e.g. 2/3")
        return cls(int(k), int(n))

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def shards(self, plan: Plan) -> range:
        """The shard numbers this part owns: a contiguous block."""
        count = -(-len(plan.rows) // plan.shard_size)
        if self.n > count:
            raise InputError(
                f"--part {self}: the plan has {count} shard(s) of {plan.shard_size} samples; at most {count} parts"
            )
        return range(count * (self.k - 1) // self.n, count * self.k // self.n)

    def indices(self, plan: Plan) -> list[int]:
        """The plan indices this part owns, in order."""
        size, n = plan.shard_size, len(plan.rows)
        return [i for s in self.shards(plan) for i in range(s * size, min((s + 1) * size, n))]


def plan_digest(root: Path) -> str:
    return hashlib.sha256((root / "plan.json").read_bytes()).hexdigest()


def write_part(root: Path, part: Part, plan: Plan) -> None:
    """Before the plan itself (DatasetFolder.create writes exactly these plan bytes): a folder with
    a plan always says which part it owns."""
    part.shards(plan)  # refuses more parts than shards before anything is written
    digest = hashlib.sha256(plan.model_dump_json(indent=1).encode()).hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    body = {"part": part.k, "of": part.n, "plan_sha256": digest}
    atomic_write(root / PART, json.dumps(body, indent=1).encode())


def read_part(root: Path) -> Part | None:
    """The part a folder owns, or None for a whole-plan capture."""
    path = root / PART
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    return Part(int(body["part"]), int(body["of"]))
