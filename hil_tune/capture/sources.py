"""What a sweep renders: RAW files, sRGB photos (unprocessed, reference kept), bundled photos, or
the live sensor of a device that cannot take injected RAW.

A source is named by a string a plan can record and a later run can load again bit for bit:
a file path, `bundled:NAME` (scikit-image's sample photos), or `live`.

An sRGB photo is one scene, but each unprocessing of it is a different camera: its own white
balance, colour matrix and noise. `NAME@K` asks for K such draws (ids `NAME`, `NAME#1` ...
`NAME#K-1`), so that a predictor sees many cameras, not only many parameter sets; draws of one
photo stay on one side of every train/validation split (`photo_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hil_tune.errors import InputError
from hil_tune.inputs import BUNDLED_IMAGES, IMAGE_SUFFIXES, bundled_frame, load_input
from hil_tune.profiles import Profile
from hil_tune.raw import RAW_SUFFIXES, RawFrame

LIVE = "live"
BUNDLED_PREFIX = "bundled:"


DRAW_SEED_STRIDE = 1_000_003  # draw d of a photo unprocesses with seed + d * stride


@dataclass(frozen=True)
class Source:
    id: str  # unique, stable: what splits by source use
    kind: str  # "raw" | "srgb" | "bundled" | "live"
    location: str  # path, bundled:NAME, or live
    draw: int = 0  # which unprocessing of an sRGB photo (0 for camera RAW and live)


def photo_of(source_id: str) -> str:
    """The photo a source id shows: the id without its `#D` draw suffix."""
    base, sep, draw = source_id.rpartition("#")
    return base if sep and draw.isdigit() else source_id


def source_from_id(source_id: str) -> Source:
    """The Source a recorded id names (bundled or file; draws included)."""
    base = photo_of(source_id)
    draw = int(source_id[len(base) + 1 :]) if base != source_id else 0
    (found,) = resolve_sources([base])
    return Source(source_id, found.kind, found.location, draw)


def _with_draws(sources: list[Source], item: str, draws: int) -> list[Source]:
    out: list[Source] = []
    for src in sources:
        if src.kind not in ("bundled", "srgb"):
            raise InputError(f"{item}: @{draws} draws apply to sRGB and bundled photos; {src.id} is {src.kind}")
        out += [Source(src.id if d == 0 else f"{src.id}#{d}", src.kind, src.location, d) for d in range(draws)]
    return out


def resolve_sources(items: list[str]) -> list[Source]:
    """Expand folders, check every file exists and is a kind we read; ids are unique and stable."""
    out: list[Source] = []
    for given in items:
        item, at, count = given.rpartition("@")
        if at and count.isdigit() and not Path(given).exists():  # NAME@K; a file named so wins
            if int(count) < 1:
                raise InputError(f"{given}: @K takes at least one unprocessing draw")
            out += _with_draws(resolve_sources([item]), given, int(count))
            continue
        item = given
        if photo_of(item) != item and not Path(item).exists():  # a recorded draw id, NAME#D
            out.append(source_from_id(item))
            continue
        if item == LIVE:
            out.append(Source(LIVE, "live", LIVE))
        elif item == "bundled":
            out += [Source(f"{BUNDLED_PREFIX}{n}", "bundled", f"{BUNDLED_PREFIX}{n}") for n in BUNDLED_IMAGES]
        elif item.startswith(BUNDLED_PREFIX):
            name = item.removeprefix(BUNDLED_PREFIX)
            if name not in BUNDLED_IMAGES:
                raise InputError(f"{item}: no bundled image {name!r}; known: {', '.join(BUNDLED_IMAGES)}")
            out.append(Source(item, "bundled", item))
        else:
            path = Path(item)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in RAW_SUFFIXES | IMAGE_SUFFIXES)
                if not files:
                    raise InputError(f"{path}: folder holds no RAW or image files")
                out += [_file_source(p) for p in files]
            elif path.is_file():
                out.append(_file_source(path))
            else:
                raise InputError(f"{path}: no such file or folder (or use bundled, bundled:NAME, live)")
    ids = [s.id for s in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"source(s) given twice: {', '.join(dupes)}")
    if not out:
        raise InputError("no sources given")
    return out


def _file_source(path: Path) -> Source:
    kind = "srgb" if path.suffix.lower() in IMAGE_SUFFIXES else "raw"
    return Source(str(path.resolve()), kind, str(path.resolve()))


def load_source(source: Source, profile: Profile, seed: int, crop: int | None = None) -> RawFrame:
    """The RawFrame of a file or bundled source (unprocessing draws seeded per source); with
    `crop`, its centre crop of at most crop x crop, taken before unprocessing."""
    tone, gamma = profile.pipeline.tone, profile.pipeline.gamma
    seed = seed + DRAW_SEED_STRIDE * source.draw
    if source.kind == "bundled":
        name = source.location.removeprefix(BUNDLED_PREFIX)
        return bundled_frame(name, seed=seed, tone=tone, gamma=gamma, crop=crop)
    if source.kind in ("raw", "srgb"):
        return load_input(source.location, seed=seed, tone=tone, gamma=gamma, crop=crop)
    raise InputError(f"{source.id}: a live source has no file to load")
