"""A cache of ISP renders keyed by (renderer, frame, setting), in memory and optionally on disk.

Why: an evaluation table renders the same (image, setting) pair more than once (the oracle's start
is another row's setting; a rerun with `--reuse` recomputes a table whose renders are all known),
and a BM3D render at 128 px costs about a second per core. The software ISP is deterministic, so
a render is a pure function of its inputs and can be looked up instead of recomputed. Only for
the built-in ISP: a device's output is a measurement (noise, drift), and its queries are the very
quantity the table reports, so a device is never cached.

`calls` still counts every query asked for (a method's query count must not depend on what an
earlier method happened to render); `renders` counts what the ISP actually computed.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from hil_tune.atomic import atomic_write
from hil_tune.params import ParamDict
from hil_tune.raw import RawFrame
from hil_tune.train.renderers import Job, Renderer


def render_key(identity: str, frame: RawFrame, params: ParamDict) -> str:
    """A digest of everything a software render depends on: the ISP's identity, the frame's
    samples and levels and colour metadata, and the setting."""
    h = hashlib.sha256(identity.encode())
    h.update(np.ascontiguousarray(frame.mosaic).tobytes())
    layout = (frame.mosaic.dtype.str, frame.mosaic.shape, frame.cfa, frame.black_level, frame.white_level)
    h.update(str(layout).encode())
    h.update(repr(frame.as_shot_wb).encode())
    if frame.rgb_cam is not None:
        h.update(np.ascontiguousarray(frame.rgb_cam, dtype=np.float64).tobytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


class CachedRenderer:
    """Wraps a software `Renderer`; misses go to it in one batch (its worker pool), hits are free.
    With `folder`, renders persist as `KEY.npy` (written atomically: a crash never leaves a torn
    entry that a later run would read)."""

    def __init__(self, inner: Renderer, folder: Path | None = None) -> None:
        self.inner, self.folder = inner, folder
        self.identity = json.dumps(inner.describe(), sort_keys=True)
        self.memory: dict[str, np.ndarray] = {}
        self.calls = 0
        self.renders = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _lookup(self, key: str) -> np.ndarray | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is not None:
            path = self.folder / f"{key}.npy"
            if path.exists():
                try:
                    self.memory[key] = np.load(path, allow_pickle=False)
                    return self.memory[key]
                except (ValueError, OSError, EOFError):
                    path.unlink(missing_ok=True)  # unreadable: render it again
        return None

    def _store(self, key: str, image: np.ndarray) -> None:
        self.memory[key] = image
        if self.folder is not None:
            buf = io.BytesIO()
            np.save(buf, image, allow_pickle=False)
            atomic_write(self.folder / f"{key}.npy", buf.getvalue())

    def render(self, jobs: list[Job], names: list[str] | None = None) -> list[np.ndarray]:
        self.calls += len(jobs)
        keys = [render_key(self.identity, frame, params) for frame, params in jobs]
        found = {k: v for k in dict.fromkeys(keys) if (v := self._lookup(k)) is not None}
        todo = [k for k in dict.fromkeys(keys) if k not in found]
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            picked = [first[k] for k in todo]
            outs = self.inner.render([jobs[i] for i in picked], [names[i] for i in picked] if names else None)
            self.renders += len(outs)
            for k, out in zip(todo, outs, strict=True):
                self._store(k, out)
                found[k] = out
        return [found[k] for k in keys]

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()
