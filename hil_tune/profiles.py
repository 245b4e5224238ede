"""Profile files: a parameter space plus the fixed settings of the pipeline behind it.

A profile is the single declaration of what a device accepts (the PyMeasure idea: declare a
knob once, derive the code). It is TOML because people edit it on a bench; it is validated with
pydantic because a typo there would otherwise surface hours later as a ruined sweep. Every error
names the file, the parameter (by index and name) and the reason.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil_tune.errors import ParameterError, ProfileError
from hil_tune.params import ParamSpace, ParamSpec, Region

BUNDLED_PACKAGE = "hil_tune.bundled_profiles"


def _duplicate_names(names: list[object]) -> list[str]:
    """One problem per parameter whose name an earlier parameter already took (non-strings ignored)."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if isinstance(name, str) and name in seen:
            out.append(f"params[{i}] ({name}): duplicate name {name!r}")
        elif isinstance(name, str):
            seen.add(name)
    return out


class PipelineSettings(BaseModel):
    """Fixed (not swept) settings of the synthetic ISP's blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bm3d_profile: Literal["np", "lc", "vn", "vn_old", "high", "deb"] = "np"
    # bm3d is bit-exact only single-threaded (its own docs); sweeps parallelise with processes.
    bm3d_threads: int = Field(default=1, ge=0)
    # noise-var is expressed in units of this variance of the [0, 1]-normalised signal, so the
    # paper's 0.01..1.0 range spans realistic sensor noise (sigma 0.01..0.1) instead of ruining every image.
    noise_var_scale: float = Field(default=0.01, gt=0)
    demosaic: Literal["malvar2004", "bilinear"] = "malvar2004"
    tone: Literal["srgb", "gamma", "linear"] = "srgb"
    gamma: float = Field(default=2.2, gt=0)
    jpeg_quality: int = Field(default=90, ge=0, le=100)  # 0 turns compression off
    jpeg_subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = "4:2:0"


class Profile(BaseModel):
    """A validated profile. `space` is built once; `sha256` identifies it in datasets and checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    params: tuple[ParamSpec, ...] = Field(min_length=1)
    pipeline: PipelineSettings = PipelineSettings()
    region: dict[str, dict[str, list[float | str]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        dupes = _duplicate_names([p.name for p in self.params])
        if dupes:
            raise ValueError(dupes[0])
        return self

    @property
    def space(self) -> ParamSpace:
        return ParamSpace(self.params)

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def regions(self) -> list[str]:
        return ["full", *self.region]

    def get_region(self, name: str) -> Region:
        if name == "full":
            return self.space.full_region()
        if name not in self.region:
            raise ParameterError(f"profile {self.name}: no region {name!r}; known: {', '.join(self.regions())}")
        return self.space.region_from_ranges(name, self.region[name])


def bundled_names() -> list[str]:
    root = resources.files(BUNDLED_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def _describe_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Turn a pydantic location into words a person can find in the file: params[3] (gain-r).min."""
    parts: list[str] = []
    i = 0
    while i < len(loc):
        key = loc[i]
        if key == "params" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            idx = loc[i + 1]
            raw = data.get("params", [])
            name = raw[idx].get("name") if idx < len(raw) and isinstance(raw[idx], dict) else None
            parts.append(f"params[{idx}]" + (f" ({name})" if name else ""))
            i += 2
            continue
        parts.append(str(key))
        i += 1
    return ".".join(parts)


def _problems(err: ValidationError, data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            out.append(f"{_describe_loc(loc[:-1], data) or 'top level'}: unknown key {loc[-1]!r}")
            continue
        where = _describe_loc(loc, data)
        # Model-level errors of the whole profile already say which parameter in their text.
        out.append(f"{where}: {msg}" if where else msg)
    return out


def _raw_duplicates(data: dict[str, Any]) -> list[str]:
    raw = data.get("params")
    entries = raw if isinstance(raw, list) else []
    return _duplicate_names([p.get("name") if isinstance(p, dict) else None for p in entries])


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Validate already-parsed TOML data; `source` names the file in every error."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as err:
        # Pydantic skips the duplicate-name check when any field fails; a user fixing the file wants
        # every problem in one pass, so duplicates are looked for in the raw data as well.
        problems = _problems(err, data)
        problems += [d for d in _raw_duplicates(data) if d not in problems]
        raise ProfileError(source, problems) from None
    problems: list[str] = []
    for rname in profile.region:
        try:
            profile.get_region(rname)
        except ParameterError as err:
            problems.append(f"region.{rname}: {err}")
    if problems:
        raise ProfileError(source, problems)
    return profile


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by file path or by the name of a bundled profile (e.g. 'synthetic')."""
    path = Path(name_or_path)
    if path.is_file():
        text_source, label = path.read_bytes(), str(path)
    elif path.suffix == "" and len(path.parts) == 1:
        res = resources.files(BUNDLED_PACKAGE) / f"{name_or_path}.toml"
        if not res.is_file():
            known = ", ".join(bundled_names())
            raise ProfileError(str(name_or_path), [f"no such file or bundled profile (bundled: {known})"])
        text_source, label = res.read_bytes(), f"{name_or_path} (bundled)"
    else:
        raise ProfileError(str(path), ["no such file"])
    try:
        data = tomllib.loads(text_source.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProfileError(label, [f"not valid TOML: {err}"]) from None
    return parse_profile(data, label)
