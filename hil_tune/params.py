"""Parameter space of an ISP: what each knob accepts, and how it maps to the unit cube.

Every later stage (sweep planning, the proxy's input, the predictor's output, the live loop's
pushes) speaks in *encoded* values in [0, 1]; only this module turns them back into device values.
Keeping encode/decode/quantize in one place is what guarantees that nothing off-grid or out of range
reaches a device: a value is either on the grid and in range, or it raises here.

Grid parameters encode linearly (min -> 0, max -> 1) so a network's continuous output has a meaning
between grid points; decoding picks the nearest grid value, as the paper does ("the value with minimal
distance from the prediction is chosen"). Categorical parameters encode by index into equal bins,
so a uniform sample in [0, 1] picks each choice with equal probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import qmc

from hil_tune.errors import ParameterError

ParamValue = float | str
ParamDict = dict[str, ParamValue]

# Grid values are rounded to this many decimals so that min + k * step is the same float whichever
# way it was computed (0.1 * 3 is 0.30000000000000004, the grid value is 0.3).
_DECIMALS = 9
# Most grid steps a parameter may have: a grid index must fit the int32 a device register holds.
MAX_GRID_STEPS = 2**31 - 2
# Relative tolerance used to decide whether a value sits on the grid or a step divides the range.
_GRID_TOL = 1e-6


class ParamSpec(BaseModel):
    """One ISP knob: a numeric grid (min..max by step) or a set of named choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    group: str = Field(min_length=1)
    kind: Literal["grid", "choice"]
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    default: float | str
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.kind == "grid":
            if self.min is None or self.max is None or self.step is None:
                raise ValueError("a grid parameter needs min, max and step")
            if self.choices is not None:
                raise ValueError("a grid parameter takes no choices")
            if self.min > self.max:
                raise ValueError(f"min {self.min} > max {self.max}")
            if self.step <= 0:
                raise ValueError(f"step {self.step} must be positive")
            if not all(math.isfinite(v) for v in (self.min, self.max, self.step)):
                raise ValueError("min, max and step must be finite numbers")
            steps = (self.max - self.min) / self.step
            if steps > MAX_GRID_STEPS:
                raise ValueError(
                    f"{self.min}..{self.max} by {self.step} is {steps:.3g} steps; at most {MAX_GRID_STEPS:,} "
                    "(grid indices are sampled, encoded and sent to devices as integers)"
                )
            if abs(steps - round(steps)) > _GRID_TOL * max(1.0, steps):
                raise ValueError(f"step {self.step} does not divide the range {self.min}..{self.max}")
            if isinstance(self.default, str):
                raise ValueError(f"default {self.default!r} is not a number")
            if not self._on_grid(float(self.default)):
                raise ValueError(f"default {self.default} is off the grid {self.min}..{self.max} step {self.step}")
        else:
            if not self.choices:
                raise ValueError("a choice parameter needs a non-empty list of choices")
            if any(v is not None for v in (self.min, self.max, self.step)):
                raise ValueError("a choice parameter takes no min, max or step")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choices repeat a value: {list(self.choices)}")
            if self.default not in self.choices:
                raise ValueError(f"default {self.default!r} is not one of {list(self.choices)}")
        return self

    # -- grid arithmetic -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of distinct values this parameter can take."""
        if self.kind == "choice":
            assert self.choices is not None
            return len(self.choices)
        assert self.min is not None and self.max is not None and self.step is not None
        return round((self.max - self.min) / self.step) + 1

    def grid_value(self, index: int) -> ParamValue:
        """The index-th allowed value (the canonical float for grids)."""
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}: index {index} outside 0..{self.size - 1}")
        if self.kind == "choice":
            assert self.choices is not None
            return self.choices[index]
        assert self.min is not None and self.step is not None
        return round(self.min + index * self.step, _DECIMALS)

    def values(self) -> list[ParamValue]:
        return [self.grid_value(i) for i in range(self.size)]

    def _grid_index(self, value: float) -> float:
        assert self.min is not None and self.step is not None
        return (value - self.min) / self.step

    def _on_grid(self, value: float) -> bool:
        k = self._grid_index(value)
        return abs(k - round(k)) <= _GRID_TOL * max(1.0, abs(k)) and self.in_range(value)

    def in_range(self, value: float) -> bool:
        assert self.min is not None and self.max is not None and self.step is not None
        slack = _GRID_TOL * self.step
        return self.min - slack <= value <= self.max + slack

    def quantize(self, value: ParamValue) -> tuple[ParamValue, bool]:
        """Snap a value to the grid. Returns (value, was_off_grid); out of range raises ParameterError."""
        if self.kind == "choice":
            assert self.choices is not None
            if value not in self.choices:
                raise ParameterError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
            return value, False
        if isinstance(value, bool):  # JSON true is not 1.0: a typo, not a setting
            raise ParameterError(f"{self.name}: {value!r} is a boolean, not a number")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParameterError(f"{self.name}: {value!r} is not a number") from None
        v = float(value)
        if not math.isfinite(v):
            raise ParameterError(f"{self.name}: {v} is not a finite number")
        if not self.in_range(v):
            raise ParameterError(f"{self.name}: {v} is outside {self.min}..{self.max}")
        snapped = self.grid_value(min(max(round(self._grid_index(v)), 0), self.size - 1))
        assert isinstance(snapped, float)
        return snapped, abs(snapped - v) > _GRID_TOL * self.step  # type: ignore[operator]

    # -- unit-cube encoding ----------------------------------------------------------------------

    def encode(self, value: ParamValue) -> float:
        """Map an allowed value to [0, 1]."""
        snapped, _ = self.quantize(value)
        if self.kind == "choice":
            assert self.choices is not None
            return (self.choices.index(str(snapped)) + 0.5) / self.size
        if self.size == 1:
            return 0.5
        return self._grid_index(float(snapped)) / (self.size - 1)

    def decode(self, u: float) -> ParamValue:
        """Map any real u to the nearest allowed value (u is clipped to [0, 1]; NaN raises)."""
        if not math.isfinite(u):
            raise ParameterError(f"{self.name}: cannot decode {u}")
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "choice":
            return self.grid_value(min(int(u * self.size), self.size - 1))
        return self.grid_value(round(u * (self.size - 1)))

    def describe(self) -> dict[str, object]:
        """The JSON shape `hil-tune profile show --json` promises (null where a field does not apply)."""
        return {
            "name": self.name,
            "group": self.group,
            "kind": self.kind,
            "min": self.min,
            "max": self.max,
            "step": self.step,
            "choices": list(self.choices) if self.choices is not None else None,
            "default": self.default,
        }


class Region(BaseModel):
    """A box inside the encoded cube: per-parameter [lo, hi] in encoded units (missing -> full range)."""

    model_config = ConfigDict(frozen=True)

    name: str
    lower: tuple[float, ...]
    upper: tuple[float, ...]


class ParamSpace:
    """An ordered set of ParamSpecs; the order is the order of the encoded vector."""

    def __init__(self, specs: Sequence[ParamSpec]) -> None:
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ParameterError(f"duplicate parameter name(s): {', '.join(dupes)}")
        self.specs: tuple[ParamSpec, ...] = tuple(specs)
        self._by_name = {s.name: s for s in specs}
        # Per-parameter grid sizes and kinds as arrays: decoding a whole vector is then a few numpy
        # operations, which the live loop does on every frame.
        self._sizes = np.array([s.size for s in self.specs], dtype=np.float64)
        self._is_choice = np.array([s.kind == "choice" for s in self.specs], dtype=bool)

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self):  # noqa: ANN204 - iterator of ParamSpec
        return iter(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ParamSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise ParameterError(f"unknown parameter {name!r}; known: {', '.join(self.names)}") from None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def defaults(self) -> ParamDict:
        return {s.name: s.default for s in self.specs}

    def validate(self, params: Mapping[str, object], *, partial: bool = False) -> tuple[ParamDict, list[str]]:
        """Check names and ranges, snap to the grid.

        Returns (quantized values, warnings naming each off-grid value). Unknown names and
        out-of-range values raise ParameterError. With partial=False, missing names take defaults.
        """
        unknown = [k for k in params if k not in self._by_name]
        if unknown:
            raise ParameterError(f"unknown parameter {unknown[0]!r}; known: {', '.join(self.names)}")
        out: ParamDict = {} if partial else self.defaults()
        warnings: list[str] = []
        for name, value in params.items():
            spec = self._by_name[name]
            snapped, moved = spec.quantize(value)  # type: ignore[arg-type]
            if moved:
                warnings.append(f"{name}: {value} is off the grid (step {spec.step}); using {snapped}")
            out[name] = snapped
        return out, warnings

    def encode(self, params: Mapping[str, ParamValue]) -> np.ndarray:
        """Full parameter dict -> float64 vector in [0, 1] (profile order)."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ParameterError(f"missing parameter(s): {', '.join(missing)}")
        return np.array([s.encode(params[s.name]) for s in self.specs], dtype=np.float64)

    def decode(self, vector: Iterable[float]) -> ParamDict:
        """Vector in [0, 1] -> nearest allowed values."""
        return {s.name: s.grid_value(int(i)) for s, i in zip(self.specs, self.decode_indices(vector), strict=True)}

    def decode_indices(self, vector: Iterable[float]) -> np.ndarray:
        """Vector in encoded units -> the grid index of the value `ParamSpec.decode` picks, per parameter.

        Clipped into [0, 1]; NaN or inf raises, naming the parameter. Grids round to the nearest
        index (half to even, like Python's round); choices take the bin u falls in.
        """
        u = np.asarray(vector if isinstance(vector, np.ndarray) else list(vector), dtype=np.float64)
        if u.shape != (len(self.specs),):
            raise ParameterError(f"expected {len(self.specs)} encoded values, got shape {u.shape}")
        bad = ~np.isfinite(u)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ParameterError(f"{self.specs[j].name}: cannot decode {u[j]}")
        u = np.clip(u, 0.0, 1.0)
        grid = np.rint(u * (self._sizes - 1))
        choice = np.minimum(np.floor(u * self._sizes), self._sizes - 1)
        return np.where(self._is_choice, choice, grid).astype(np.int64)

    def encode_indices(self, indices: np.ndarray) -> np.ndarray:
        """Grid indices -> their encoded values (the inverse of `decode_indices`, as `encode` maps them)."""
        idx = np.asarray(indices, dtype=np.float64)
        grid = np.divide(idx, self._sizes - 1, out=np.full_like(idx, 0.5), where=self._sizes > 1)
        return np.where(self._is_choice, (idx + 0.5) / self._sizes, grid)

    def full_region(self) -> Region:
        n = len(self.specs)
        return Region(name="full", lower=(0.0,) * n, upper=(1.0,) * n)

    def region_from_ranges(self, name: str, ranges: Mapping[str, Sequence[object]]) -> Region:
        """Build an encoded box from per-parameter sub-ranges in device units.

        Grid parameters take [lo, hi] values; choice parameters take the list of allowed choices,
        which must be contiguous in the profile's order so the region stays a box.
        """
        lower = [0.0] * len(self.specs)
        upper = [1.0] * len(self.specs)
        for pname, rng in ranges.items():
            spec = self[pname]
            i = self.names.index(pname)
            if spec.kind == "grid":
                if len(rng) != 2:
                    raise ParameterError(f"region {name}: {pname} needs [lo, hi], got {list(rng)}")
                lo, hi = (spec.encode(float(v)) for v in rng)  # type: ignore[arg-type]
                if lo > hi:
                    raise ParameterError(f"region {name}: {pname} has lo > hi ({list(rng)})")
                lower[i], upper[i] = lo, hi
            else:
                assert spec.choices is not None
                idx = sorted(spec.choices.index(str(c)) if c in spec.choices else -1 for c in rng)
                if not idx or idx[0] < 0:
                    raise ParameterError(f"region {name}: {pname} choices {list(rng)} not all in {spec.choices}")
                if idx != list(range(idx[0], idx[-1] + 1)):
                    raise ParameterError(f"region {name}: {pname} choices must be contiguous in profile order")
                lower[i], upper[i] = idx[0] / spec.size, (idx[-1] + 1) / spec.size
        return Region(name=name, lower=tuple(lower), upper=tuple(upper))

    def sample_lhc(self, n: int, *, seed: int, region: Region | None = None) -> np.ndarray:
        """n Latin-hypercube points in the region's box (encoded units), seeded and reproducible.

        Points are returned *unquantized*; decode() them to get device values. The stratification of
        the Latin hypercube is per dimension, so every grid bin range gets its share of samples.
        """
        if n < 1:
            raise ParameterError(f"need at least one sample, got {n}")
        region = region or self.full_region()
        sampler = qmc.LatinHypercube(d=len(self.specs), rng=np.random.default_rng(seed))
        unit = sampler.random(n)
        lo = np.asarray(region.lower)
        hi = np.asarray(region.upper)
        return lo + unit * (hi - lo)

    def sample_params(self, n: int, *, seed: int, region: Region | None = None) -> list[ParamDict]:
        return [self.decode(row) for row in self.sample_lhc(n, seed=seed, region=region)]
