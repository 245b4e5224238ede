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


class ParamMapping(BaseModel):
    """Where one parameter lives on a device and how its value is written there.

    `scale` is the fixed-point factor: the device holds round(value * scale) in a register, or
    value * scale in a GenICam node. Choices travel as their index (registers) or their text (nodes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str | None = None
    addr: int | None = Field(default=None, ge=0, le=0xFFFF)
    scale: float = Field(default=1.0, gt=0)
    # GenICam features that a camera refuses to change while streaming (Width, PixelFormat...).
    locked_while_streaming: bool = False


class DeviceSettings(BaseModel):
    """How a hardware (or emulated) ISP exposes the profile's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "registers": a board with a register map, reached over serial or USB (same firmware protocol).
    control: Literal["genicam", "registers"]
    vendor_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    product_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    # Frames to drop after a parameter change on devices that cannot tag frames with their settings.
    settle_frames: int = Field(default=0, ge=0, le=64)
    map: dict[str, ParamMapping] = Field(default_factory=dict)


class Profile(BaseModel):
    """A validated profile. `space` is built once; `sha256` identifies it in datasets and checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    params: tuple[ParamSpec, ...] = Field(min_length=1)
    pipeline: PipelineSettings = PipelineSettings()
    region: dict[str, dict[str, list[float | str]]] = Field(default_factory=dict)
    device: DeviceSettings | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        dupes = _duplicate_names([p.name for p in self.params])
        if dupes:
            raise ValueError(dupes[0])
        return self

    @model_validator(mode="after")
    def _device_map(self) -> Profile:
        if self.device is None:
            return self
        problems = _mapping_problems(self.params, self.device)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def space(self) -> ParamSpace:
        return ParamSpace(self.params)

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def device_sha256(self) -> str:
        """What a device interprets: the parameters (ranges, grids, defaults) and the device map.
        A board reports this for the profile it was built with, so an edited copy that kept the
        name is caught at open; regions, pipeline notes and the description may differ freely."""
        data = self.model_dump(mode="json")
        canonical = json.dumps({k: data[k] for k in ("params", "device")}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def regions(self) -> list[str]:
        return ["full", *self.region]

    def get_region(self, name: str) -> Region:
        if name == "full":
            return self.space.full_region()
        if name not in self.region:
            raise ParameterError(f"profile {self.name}: no region {name!r}; known: {', '.join(self.regions())}")
        return self.space.region_from_ranges(name, self.region[name])


_INT32 = 2**31 - 1


def _mapping_problems(params: tuple[ParamSpec, ...], device: DeviceSettings) -> list[str]:
    """Every way the device map can fail to carry each value of the space exactly, one line each."""
    by_name = {p.name: p for p in params}
    problems = [f"device.map.{k}: no such parameter" for k in device.map if k not in by_name]
    addrs: dict[int, str] = {}
    for spec in params:
        m = device.map.get(spec.name)
        where = f"device.map.{spec.name}"
        if m is None:
            problems.append(f"{where}: missing (every parameter needs a place on the device)")
            continue
        if device.control == "genicam" and not m.node:
            problems.append(f"{where}: a GenICam device needs a node name")
        if device.control == "registers":
            if m.addr is None:
                problems.append(f"{where}: a register device needs addr")
            elif m.addr in addrs:
                problems.append(f"{where}: register {m.addr:#06x} already holds {addrs[m.addr]}")
            else:
                addrs[m.addr] = spec.name
            if spec.kind == "grid":
                # Fixed point must carry every grid value exactly, or read-back could never verify.
                assert spec.min is not None and spec.max is not None and spec.step is not None
                for label, v in (("min", spec.min), ("max", spec.max), ("step", spec.step)):
                    fixed = v * m.scale
                    if abs(fixed - round(fixed)) > 1e-6 * max(1.0, abs(fixed)):
                        problems.append(f"{where}: {label} {v} x scale {m.scale} is not an integer")
                    elif abs(fixed) > _INT32:
                        problems.append(f"{where}: {label} {v} x scale {m.scale} overflows a 32-bit register")
    return problems


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
    errors = err.errors()
    item_failed = any(len(e["loc"]) > 1 and e["loc"][0] == "params" for e in errors)
    for e in errors:
        loc = tuple(e["loc"])
        if item_failed and loc == ("params",) and e["type"] == "too_short":
            continue  # "no parameters left" only echoes the parameter that failed
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


def _read(name_or_path: str | Path, relative_to: Path | None = None) -> tuple[dict[str, Any], str, Path | None]:
    """Parsed TOML of a profile file or bundled name, the label errors use for it, and the file's
    folder (None for a bundled profile). A relative path named inside a profile file is that
    file's neighbour, never the working directory's: a profile means the same from anywhere."""
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.is_file():
        text_source, label, folder = path.read_bytes(), str(path), path.resolve().parent
    elif Path(name_or_path).suffix == "" and len(Path(name_or_path).parts) == 1:
        res = resources.files(BUNDLED_PACKAGE) / f"{name_or_path}.toml"
        if not res.is_file():
            known = ", ".join(bundled_names())
            raise ProfileError(str(name_or_path), [f"no such file or bundled profile (bundled: {known})"])
        text_source, label, folder = res.read_bytes(), f"{name_or_path} (bundled)", None
    else:
        raise ProfileError(str(path), ["no such file"])
    try:
        return tomllib.loads(text_source.decode("utf-8")), label, folder
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProfileError(label, [f"not valid TOML: {err}"]) from None


MAX_EXTENDS_DEPTH = 8


def _key(label: str, folder: Path | None) -> str:
    """One name per profile file however it was reached (relative, absolute, via links)."""
    return str(Path(label).resolve()) if folder is not None else label


def _resolve_extends(
    data: dict[str, Any], label: str, here: Path | None, chain: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`extends = "synthetic"` takes every top-level table of the base profile that this file leaves out.

    A device profile then states only its device map, and cannot drift from the space it maps.
    Each file's `extends` is resolved against that file's own folder (a bundled profile's against
    the bundled ones); a cycle is named as one.
    """
    base_name = data.get("extends")
    chain = (*chain, _key(label, here))
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ProfileError(label, [f"extends: {base_name!r} must name one profile (a bundled name or a file)"])
    base, base_label, base_here = _read(base_name, here)
    if _key(base_label, base_here) in chain:
        raise ProfileError(label, [f"extends: a cycle: {' -> '.join((*chain, _key(base_label, base_here)))}"])
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ProfileError(label, [f"extends: more than {MAX_EXTENDS_DEPTH} levels deep"])
    base = _resolve_extends(base, base_label, base_here, chain)
    merged = {k: v for k, v in base.items() if k != "extends"}
    merged.update({k: v for k, v in data.items() if k != "extends"})
    return merged


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by file path or by the name of a bundled profile (e.g. 'synthetic')."""
    data, label, here = _read(name_or_path)
    return parse_profile(_resolve_extends(data, label, here), label)
