"""One policy for a device that faults mid-operation, shared by capture, evaluation renders and
the live loop: which faults are worth another attempt, and how long to wait before it.

Why one: a cable pulled during a sweep, during `eval predictor` and during `live` is the same
event, and a user tuning retries for their bench should not meet three behaviours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hil_tune.drivers.base import Driver
from hil_tune.drivers.errors import DeviceError, DeviceNotFound
from hil_tune.errors import HilTuneError

T = TypeVar("T")


def transient(err: DeviceError) -> bool:
    """A fault worth another attempt: the device said so, or it was not found *while
    reconnecting* (a cable still out)."""
    return err.recoverable or isinstance(err, DeviceNotFound)


@dataclass(frozen=True)
class Backoff:
    """`retries` attempts after the first, waiting base_s, 2 base_s, 4 base_s ... at most cap_s."""

    retries: int = 3
    base_s: float = 0.2
    cap_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.base_s * 2**attempt, self.cap_s)


class RetriesExhaustedError(HilTuneError):
    """The device kept faulting (or faulted for good); `cause` is the last fault."""

    def __init__(self, cause: DeviceError, attempts: int) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempts = cause, attempts


def with_reconnect(driver: Driver, action: Callable[[], T], policy: Backoff) -> tuple[T, int]:
    """Run `action` with the device open, reconnecting after a transient fault (the frames made
    meanwhile are dropped by the driver). Returns (result, attempts); raises RetriesExhaustedError."""
    attempt = 0
    while True:
        try:
            if not driver.is_open:
                driver.reconnect()
            return action(), attempt + 1
        except DeviceError as err:
            if not transient(err) or attempt >= policy.retries:
                raise RetriesExhaustedError(err, attempt + 1) from err
            driver.close()
            time.sleep(policy.delay(attempt))
            attempt += 1
