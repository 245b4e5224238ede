"""Settings that reach a pipeline only at a frame boundary, some frames after they were written.

Why one class: the simulator driver and the emulated register board both model a real ISP's
latency this way (a write is committed at once but shows in the image `settle_frames` frames
later, tagged so a caller can tell which frame first carries it), and kept two copies of the
same queue, one of parameter dicts and one of register dicts.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class SettleQueue(Generic[T]):
    """What the pipeline runs with (`active`, `active_tag`) and the committed settings on their way."""

    def __init__(self, active: T, settle_frames: int) -> None:
        self.active, self.active_tag = active, 0
        self.settle_frames = settle_frames
        self._waiting: deque[tuple[int, T, int]] = deque()

    def commit(self, settings: T, tag: int) -> None:
        """A write the device acknowledged; it goes live `settle_frames` boundaries from now."""
        self._waiting.append((self.settle_frames, settings, tag))

    def frame_boundary(self) -> None:
        """Between two frames: the settings whose wait is over go live (the latest of them wins)."""
        still: deque[tuple[int, T, int]] = deque()
        for left, settings, tag in self._waiting:
            if left <= 0:
                self.active, self.active_tag = settings, tag
            else:
                still.append((left - 1, settings, tag))
        self._waiting = still
