"""Open a dataset folder for a capture: continue its plan or plan a new one.

Why a module of its own: whether a folder may be written, and whether a resume asks for the plan
the folder already holds, is a library decision (a Python caller of `run_capture` needs it as much
as the CLI does), and it is the one place where an earlier sweep could be silently overwritten.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.parts import PART, Part, read_part, write_part
from hil_tune.capture.plan import Plan, build_plan, read_around
from hil_tune.capture.sources import resolve_sources
from hil_tune.errors import InputError
from hil_tune.profiles import Profile


@dataclass(frozen=True)
class PlanRequest:
    """What a new plan is built from (the capture command's planning options)."""

    sources: list[str] = field(default_factory=list)
    samples_per_source: int = 8
    patch: int = 512
    seed: int = 0
    region: str = "plausible"
    around: Path | None = None
    radius: float = 0.1
    shard_size: int = 64
    part: Part | None = None  # this folder's share of the plan (capture on several rigs); None: all

    def build(self, profile: Profile) -> Plan:
        return build_plan(
            profile, resolve_sources(self.sources), samples_per_source=self.samples_per_source, seed=self.seed,
            patch=self.patch, region=self.region, around=read_around(self.around) if self.around else None,
            radius=self.radius, shard_size=self.shard_size,
        )  # fmt: skip


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    resumed: bool


def prepare_capture(
    out: Path,
    request: PlanRequest,
    *,
    resume: bool,
    profile: Callable[[], Profile],
    profile_given: bool = False,
    planning: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> Prepared:
    """The plan a capture into `out` runs, creating the folder's plan when it has none.

    - A folder holding a dataset is continued only with `resume`; a non-empty folder that holds
      none is never written.
    - Resuming needs nothing but the folder (its plan holds the whole profile); sources given with
      `resume` must ask for the same plan (`Plan.key`), or nothing is written and the differences
      are named.
    - `profile` is called only when needed: for a new plan, or to compare with a resumed one when
      the caller named a profile (`profile_given`). `planning` wraps the (slow) planning step, for
      a status line.
    """
    folder = DatasetFolder(out)
    if folder.exists() and not resume:
        raise InputError(f"{out} already holds a dataset: add --resume to continue it, or choose a new folder")
    if not folder.exists() and out.exists() and any(p.name != PART for p in out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder")
    if folder.exists():
        held = read_part(out)
        if request.part is not None and request.part != held:
            raise InputError(f"--resume --part {request.part}: {out} holds part {held or 'all (no --part)'}")
        plan = folder.plan()
        if request.sources:
            wanted = request.build(profile() if profile_given else plan.load_profile()).key()
            diff = {k: (v, wanted[k]) for k, v in plan.key().items() if wanted[k] != v}
            if diff:
                raise InputError(f"--resume: these differ from the dataset's plan: {diff}")
        return Prepared(plan, resumed=True)
    if not request.sources:
        raise InputError("give at least one --source (file, folder, bundled, bundled:NAME or live)")
    with planning():
        plan = request.build(profile())
    if request.part is not None:
        write_part(out, request.part, plan)
    folder.create(plan)
    return Prepared(plan, resumed=False)
