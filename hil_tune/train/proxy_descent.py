"""Per-image descent through the frozen proxy: the free first stage of tuning one image.

Why: the predictor is amortised. One network maps every image to a setting, and on photos it
never saw it lands well short of what the proxy itself knows for that image: on 8 held-out crops
(`docs/predictor.md`) 20 Adam steps through the proxy, from the prediction, took the real ISP's
result from 24.8 to 29.9 dB PSNR, at the per-image oracle's loss (64 device queries each), for one
device render. The proxy is faithful near the settings it was trained on, and gradients are free;
device queries are not. So tuning descends through the proxy first, renders the result once on
the device, and spends the remaining queries on a local search from the better of the two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hil_tune.errors import InputError
from hil_tune.profiles import Profile
from hil_tune.raw import CFA_PATTERNS, RawFrame
from hil_tune.train.proxy_train import load_proxy
from hil_tune.train.tasks import Task, load_task

PROXY_STEPS = 20
PROXY_LR = 0.02  # Adam, encoded units: at most 0.02 of the box per knob and step


@dataclass
class ProxyStage:
    """The run's frozen proxy and task, for descending per image."""

    proxy: torch.nn.Module
    task: Task
    run: Path
    steps: int = PROXY_STEPS
    lr: float = PROXY_LR
    # One descent per (image, start): predicted+4 and predicted+10 share theirs.
    _memo: dict[bytes, np.ndarray] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, object]:
        return {"proxy": str(self.run), "steps": self.steps, "optimiser": f"Adam lr {self.lr}, encoded units"}


def proxy_stage(side: dict, profile: Profile, steps: int, proxy_run: Path | None = None) -> ProxyStage | None:
    """The stage for a predictor run (its sidecar `side`), or None when `steps` is 0. The proxy is
    the one the predictor was trained through unless `proxy_run` names another of the same profile;
    a recorded proxy that is gone is a clear error, never a silent fall-back to no stage."""
    if steps < 0:
        raise InputError(f"--proxy-steps {steps}: must be 0 (no proxy stage) or more")
    if steps == 0:
        return None
    run = Path(proxy_run) if proxy_run is not None else Path(side["proxy"]["run"])
    if not (run / "model.pt").is_file():
        raise InputError(
            f"the proxy run {run} is not there: give --proxy RUN (the proxy the predictor was trained through), "
            "or --proxy-steps 0 to tune on the device alone"
        )
    proxy, _ = load_proxy(run, profile)
    for p in proxy.parameters():
        p.requires_grad_(False)
    return ProxyStage(proxy.eval(), load_task(side["task"], profile, torch.device("cpu")), run, steps)


def descend(
    stage: ProxyStage, frame: RawFrame, reference: np.ndarray, start: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Encoded setting with the lowest task loss through the proxy along `stage.steps` Adam steps
    from `start`, inside the box [lower, upper]; `reference` is the uint8 target image."""
    parts = (frame.mosaic, reference, start, np.frombuffer(frame.cfa.encode(), np.uint8))
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in parts)).digest()
    if key not in stage._memo:
        stage._memo[key] = _descend(stage, frame, reference, start, lower, upper)
    return stage._memo[key].copy()


def _descend(
    stage: ProxyStage, frame: RawFrame, reference: np.ndarray, start: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    mosaic = torch.from_numpy(frame.normalized()[None, None].astype(np.float32))
    cfa = torch.tensor([CFA_PATTERNS.index(frame.cfa)])
    batch = {"reference": torch.from_numpy(reference.transpose(2, 0, 1)[None].astype(np.float32) / 255),
             "index": torch.tensor([0]), "source": [frame.source or "image"]}  # fmt: skip
    lo, hi = torch.tensor(lower, dtype=torch.float32), torch.tensor(upper, dtype=torch.float32)
    u = torch.tensor(np.clip(start, lower, upper), dtype=torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=stage.lr)
    best_u, best = u.detach().clone(), float("inf")
    for _ in range(stage.steps):
        loss = stage.task.loss(stage.proxy(mosaic, cfa, u[None]), batch)
        if not torch.isfinite(loss):
            break  # keep the best finite point; a NaN step must not reach the device
        if loss.item() < best:
            best, best_u = loss.item(), u.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            u.copy_(torch.maximum(torch.minimum(u, hi), lo))
    with torch.no_grad():  # the last step's point, if it is the best
        loss = stage.task.loss(stage.proxy(mosaic, cfa, u[None]), batch)
        if torch.isfinite(loss) and loss.item() < best:
            best_u = u.detach().clone()
    return best_u.numpy().astype(np.float64)
