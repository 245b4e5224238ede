"""The sweep plan: which patch of which source meets which parameter set, fixed before capture.

A plan is written into the dataset before the first sample, so a resumed or repeated run takes
exactly the same samples. Parameter sets come from scipy's Latin hypercube (through ParamSpace) in
the encoded unit cube, restricted to a sampling region, and are snapped to the profile's grid.

Regions: `full` (the paper's operational ranges), a named `[region.NAME]` box of the profile, or
`around` given parameter sets (a box of +-radius in encoded units around each, clipped to the
cube), shared by every source or each source's own (`hil-tune refine` samples around what the
predictor chose for that very image).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from hil_tune.capture.sources import Source, load_source
from hil_tune.errors import InputError, ParameterError
from hil_tune.inputs import stable_seed
from hil_tune.isp.denoise import MIN_SIDE, check_size
from hil_tune.params import ParamDict, Region
from hil_tune.profiles import Profile
from hil_tune.raw import patches

PLAN_VERSION = 1


class PlanRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    source: str
    patch: tuple[int, int, int, int] | None  # y, x, h, w in the source frame; None for live
    params: dict[str, float | str]
    encoded: tuple[float, ...]


class RegionSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    centers: list[dict[str, float | str]] = []
    radius: float | None = None
    # source id -> that source's own centres (refine); empty when the centres are shared
    centers_by_source: dict[str, list[dict[str, float | str]]] = {}


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = PLAN_VERSION
    profile: str
    profile_sha256: str
    profile_data: dict[str, Any]  # the whole resolved profile: a dataset explains itself anywhere
    seed: int
    samples_per_source: int
    patch: int
    shard_size: int = 64
    region: RegionSpec
    sources: list[dict[str, Any]]
    rows: list[PlanRow]

    def load_profile(self) -> Profile:
        profile = Profile.model_validate(self.profile_data)
        if profile.sha256 != self.profile_sha256:
            raise InputError(f"plan: the stored profile {self.profile} does not match its recorded hash")
        return profile

    def sampling_box(self) -> Region:
        """The encoded box the plan sampled (for `around`, the whole cube: its union of boxes is
        not one box). Proxies are trained and predictors confined inside it."""
        if self.region.lower:
            return Region(name=self.region.name, lower=self.region.lower, upper=self.region.upper)
        return self.load_profile().space.full_region()

    def key(self) -> dict[str, Any]:
        """What must match for `--resume` to continue this plan."""
        return {
            "profile_sha256": self.profile_sha256,
            "seed": self.seed,
            "samples_per_source": self.samples_per_source,
            "patch": self.patch,
            "shard_size": self.shard_size,
            "region": self.region.name,
            "sources": [s["id"] for s in self.sources],
        }


def around_boxes(
    profile: Profile, centers: Sequence[Mapping[str, object]], radius: float, within: Region | None = None
) -> list[tuple[np.ndarray, np.ndarray, ParamDict]]:
    """A box of +-radius (encoded) around each centre, clipped to the cube or to `within`."""
    if not 0 < radius <= 1:
        raise ParameterError(f"--radius {radius}: must be in (0, 1] (encoded units)")
    if not centers:
        raise ParameterError("--around: no parameter sets given")
    n = len(profile.space)
    lo, hi = (np.zeros(n), np.ones(n)) if within is None else (np.asarray(within.lower), np.asarray(within.upper))
    boxes = []
    for c in centers:
        full, _ = profile.space.validate(c)
        u = np.clip(profile.space.encode(full), lo, hi)
        boxes.append((np.clip(u - radius, lo, hi), np.clip(u + radius, lo, hi), full))
    return boxes


def build_plan(
    profile: Profile,
    sources: list[Source],
    *,
    samples_per_source: int,
    seed: int = 0,
    patch: int = 512,
    region: str = "plausible",
    around: Sequence[Mapping[str, object]] | Mapping[str, Sequence[Mapping[str, object]]] | None = None,
    radius: float = 0.1,
    shard_size: int = 64,
    within: Region | None = None,
) -> Plan:
    """Each source gets `samples_per_source` LHC parameter sets (its own seeded hypercube), sample j
    on patch j mod n_patches of that source, so both the parameters and the image content spread.

    `around` is a list of parameter sets every source samples around, or a mapping from source id
    to that source's own list; either way sample j of a source is drawn around its centre
    j mod n_centres. With `within` (a region box), the boxes around centres are clipped to it and
    it is the plan's sampling box: a predictor confined to a region is refined inside it."""
    if shard_size < 1:
        raise ParameterError(f"shard size {shard_size}: need at least 1")
    if samples_per_source < 1:
        raise ParameterError(f"--samples-per-source {samples_per_source}: need at least 1")
    if patch < MIN_SIDE:
        raise ParameterError(f"--patch {patch}: the ISP takes at least {MIN_SIDE} pixels a side")
    space = profile.space
    per_source = _per_source_boxes(profile, sources, around, radius, within) if isinstance(around, Mapping) else None
    boxes = around_boxes(profile, around, radius, within) if around is not None and per_source is None else None
    box: Region | None = None
    inside = {"lower": within.lower, "upper": within.upper} if within is not None else {}
    if per_source is not None:
        by_source = {s: [b[2] for b in bs] for s, bs in per_source.items()}
        region_spec = RegionSpec(name="around", radius=radius, centers_by_source=by_source, **inside)
    elif boxes is not None:
        region_spec = RegionSpec(name="around", centers=[b[2] for b in boxes], radius=radius, **inside)
    else:
        box = profile.get_region(region)
        region_spec = RegionSpec(name=box.name, lower=box.lower, upper=box.upper)
    rows: list[PlanRow] = []
    source_info: list[dict[str, Any]] = []
    for source in sources:
        s_seed = stable_seed(source.id, seed)
        if source.kind == "live":
            windows: list[tuple[int, int, int, int] | None] = [None]
            info: dict[str, Any] = {"id": source.id, "kind": source.kind, "location": source.location}
        else:
            frame = load_source(source, profile, seed)
            windows = [tuple(p.meta["crop"]) for p in patches(frame, patch)]  # type: ignore[misc]
            # a source smaller than the patch gives one smaller patch: it must still be one the ISP takes
            check_size(min(w[2] for w in windows), min(w[3] for w in windows), source.id)
            info = {"id": source.id, "kind": source.kind, "location": source.location, "draw": source.draw,
                    "shape": list(frame.shape), "cfa": frame.cfa, "patches": len(windows)}  # fmt: skip
        source_info.append(info)
        if box is not None:
            units = space.sample_lhc(samples_per_source, seed=s_seed, region=box)
        else:
            units = _around_units(profile, per_source[source.id] if per_source else boxes, samples_per_source, s_seed)
        for j, u in enumerate(units):
            params = space.decode(u)
            rows.append(PlanRow(
                index=len(rows), source=source.id, patch=windows[j % len(windows)], params=params,
                encoded=tuple(float(x) for x in space.encode(params)),
            ))  # fmt: skip
    return Plan(
        profile=profile.name,
        profile_sha256=profile.sha256,
        profile_data=profile.model_dump(mode="json"),
        seed=seed,
        samples_per_source=samples_per_source,
        patch=patch,
        shard_size=shard_size,
        region=region_spec,
        sources=source_info,
        rows=rows,
    )


def _per_source_boxes(
    profile: Profile,
    sources: list[Source],
    around: Mapping[str, Sequence[Mapping[str, object]]],
    radius: float,
    within: Region | None,
) -> dict[str, list[tuple[np.ndarray, np.ndarray, ParamDict]]]:
    """Each source's own boxes; every source needs centres, and every centre a source."""
    ids = [s.id for s in sources]
    missing = [i for i in ids if not around.get(i)]
    unknown = sorted(set(around) - set(ids))
    if missing or unknown:
        raise ParameterError(
            f"--around per source: no centres for {', '.join(missing) or '-'}; centres for unknown sources "
            f"{', '.join(unknown) or '-'}"
        )
    return {i: around_boxes(profile, around[i], radius, within) for i in ids}


def _around_units(
    profile: Profile, boxes: Sequence[tuple[np.ndarray, np.ndarray, ParamDict]] | None, n: int, seed: int
) -> np.ndarray:
    """Samples split over the centres in turn; each centre's share is its own small hypercube."""
    assert boxes is not None
    space = profile.space
    units = np.empty((n, len(space)))
    for k, (lo, hi, _) in enumerate(boxes):
        idx = np.arange(k, n, len(boxes))
        if len(idx):
            near = Region(name="around", lower=tuple(lo), upper=tuple(hi))
            units[idx] = space.sample_lhc(len(idx), seed=seed + k, region=near)
    return units


def read_around(path: Path) -> list[dict[str, object]]:
    """A JSON parameter set or a list of them (what `hil-tune predict --params-out` writes)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read parameter sets ({err})") from None
    sets = data if isinstance(data, list) else [data]
    if not all(isinstance(s, dict) for s in sets):
        raise InputError(f"{path}: expected a JSON object or a list of objects")
    return sets
