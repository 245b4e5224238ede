"""Row bands in threads, for the hot loop OpenCV cannot run for us: 16-bit table look-ups.

OpenCV already spreads its filters over the cores, but numpy runs `take` on one. numpy releases the
GIL inside it, so splitting the frame into horizontal bands and handing them to a small thread pool
halves the look-up on this 2-core machine (measured 16.7 -> 9.3 ms for the tone curve of a 2 MP
frame; the RAW level table of `RawFrame.normalized` gains alike). Small patches, where a thread
hand-off costs more than it saves, run inline.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import cv2
import numpy as np

MIN_ELEMENTS_TO_SPLIT = 1 << 18  # below ~256k elements a thread hand-off costs more than it saves


def worker_count() -> int:
    """Threads for one look-up: the cores this process may use, capped by OpenCV's own thread setting
    (one knob, `cv2.setNumThreads`, then limits the whole ISP)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores, cv2.getNumThreads()))


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="hil-tune-isp")


def take_in_bands(table: np.ndarray, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`table[index]` for an integer `index` array of any shape, computed over row bands in threads."""
    if out is None:
        out = np.empty(index.shape, dtype=table.dtype)
    elif out.shape != index.shape or out.dtype != table.dtype:
        raise ValueError(f"out must be {table.dtype} {index.shape}, got {out.dtype} {out.shape}")
    # mode="clip" skips numpy's bounds-checked buffered path; it can change nothing when no index of
    # this dtype can run past the table (a uint16 index into a 65,536-entry table).
    mode = "clip" if index.dtype.kind == "u" and np.iinfo(index.dtype).max < table.shape[0] else "raise"
    n = worker_count()
    if index.size < MIN_ELEMENTS_TO_SPLIT or n == 1 or index.ndim == 0 or index.shape[0] < n:
        np.take(table, index, out=out, mode=mode)
        return out
    edges = np.linspace(0, index.shape[0], n + 1).astype(int)

    def band(a: int, b: int, dst: np.ndarray = out) -> None:
        np.take(table, index[a:b], out=dst[a:b], mode=mode)

    for f in [_pool().submit(band, int(a), int(b)) for a, b in itertools.pairwise(edges)]:
        f.result()
    return out
