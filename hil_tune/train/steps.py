"""One optimiser step, shared by the proxy's and the predictor's training loops.

Why here and not in each loop: both loops once checked the loss for NaN *after* `opt.step()`, so
a diverged batch had already written NaN into the weights (and the optimiser's moments) before the
run stopped. The check now sits between backward and step; under DDP the ranks agree on it with
one all-reduce, so no rank steps while another stops (which would hang the next all-reduce).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hil_tune.errors import HilTuneError


class DivergedError(HilTuneError, FloatingPointError):
    """The training loss stopped being a finite number; the weights were not touched by that step."""


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, epoch: int, *, distributed: bool = False) -> float:
    """Backward and step on `loss`, refused before the step when it is not finite (on any rank)."""
    opt.zero_grad()
    loss.backward()
    value = loss.item()
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0])
    if distributed:
        dist.all_reduce(bad)
    if bad.item() > 0:
        raise DivergedError(f"epoch {epoch}: the loss became {value}; lower --lr (the weights kept the last step)")
    opt.step()
    return value


@dataclass
class EpochRun:
    """What one pass over the training data did: the sample-weighted mean loss, samples, seconds."""

    mean_loss: float
    samples: int
    seconds: float


def run_epoch(
    loader: Iterable[Any],
    batch_loss: Callable[[Any], tuple[torch.Tensor, int]],
    opt: torch.optim.Optimizer,
    epoch: int,
    *,
    distributed: bool = False,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> EpochRun:
    """One epoch of `descend` steps, shared by the proxy's and the predictor's trainers (which kept
    a copy each): `batch_loss(batch)` gives the loss and how many samples it averages."""
    t0, total, seen = time.perf_counter(), 0.0, 0
    steps = len(loader) if isinstance(loader, Sized) else 0
    for step, batch in enumerate(loader):
        loss, n = batch_loss(batch)
        value = descend(opt, loss, epoch, distributed=distributed)
        total += value * n
        seen += n
        if on_batch:
            on_batch(step + 1, steps, value)
    return EpochRun(total / max(seen, 1), seen, time.perf_counter() - t0)
