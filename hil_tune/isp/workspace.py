"""Scratch arrays reused from frame to frame, so the ISP stops paying the kernel for fresh memory.

A 2 MP frame moves through about 150 MB of float intermediates. Allocated afresh on every call,
each of those multi-megabyte arrays comes straight from `mmap` (glibc returns blocks that large to
the kernel on free), and the first write to every 4 KiB page of it is a page fault that zeroes
the page: measured here, that was a third of the pipeline's time, more than any block's arithmetic.
A sweep or a live loop renders thousands of frames of one size, so the pipeline keeps one set of
scratch arrays per thread and writes into them (OpenCV's `dst=`, numpy's `out=`). Only the decoded
output is a new array; a caller that wants to keep intermediates (`SyntheticISP.stages`) runs without
a workspace and gets fresh arrays.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


class Workspace:
    """Named scratch arrays; an array is re-made only when its shape or dtype changes."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type | np.dtype = np.float32) -> np.ndarray:
        """An uninitialised array for `name`: the same memory as the previous call when shapes match."""
        arr = self._arrays.get(name)
        if arr is None or arr.shape != shape or arr.dtype != np.dtype(dtype):
            arr = np.empty(shape, dtype=dtype)
            self._arrays[name] = arr
        return arr


def scratch(
    work: Workspace | None, name: str, shape: tuple[int, ...], dtype: type | np.dtype = np.float32
) -> np.ndarray:
    """`work`'s array for `name`, or a fresh one when there is no workspace."""
    return np.empty(shape, dtype=dtype) if work is None else work.array(name, shape, dtype)


def thread_workspace() -> Workspace:
    """This thread's workspace: threads (a live sensor and a capture loop) never share buffers."""
    work = getattr(_local, "workspace", None)
    if work is None:
        work = _local.workspace = Workspace()
    return work
