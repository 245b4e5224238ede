"""Downstream tasks a predictor is trained for: a loss on the ISP output (through the proxy).

Built in: `reference`, human viewing: L1 + (1 - SSIM) against the reference image the dataset
holds for sources unprocessed from sRGB photos (SSIM from pytorch-msssim).

Plug-in: `--task package.module:factory`. The factory is called as factory(profile=..., device=...)
and returns (network, loss): a torch module that takes the ISP output (B, 3, H, W) in [0, 1], and
loss(network_output, batch) -> scalar, where batch holds "index", "source", "reference" (when
present) so the plug-in can look up its labels (boxes, masks) by sample. The network is frozen
here whatever the plug-in did: only the predictor learns.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from pytorch_msssim import ssim
from torch import Tensor, nn

from hil_tune.errors import InputError
from hil_tune.profiles import Profile


class Task:
    """A frozen network (identity for `reference`) and a loss on its output."""

    def __init__(self, name: str, network: nn.Module, loss: Callable[[Tensor, dict[str, Any]], Tensor]) -> None:
        self.name, self.network, self._loss = name, network, loss
        network.eval()
        for p in network.parameters():
            p.requires_grad_(False)

    def loss(self, isp_output: Tensor, batch: dict[str, Any]) -> Tensor:
        return self._loss(self.network(isp_output), batch)


def reference_loss(output: Tensor, batch: dict[str, Any]) -> Tensor:
    if "reference" not in batch:
        raise InputError("task 'reference' needs reference images: capture sRGB or bundled sources")
    ref = batch["reference"].to(output.device)
    win = 11 if min(output.shape[-2:]) >= 11 * 2 else 5
    return (output - ref).abs().mean() + (1 - ssim(output.clamp(0, 1), ref, data_range=1.0, win_size=win))


def load_task(spec: str, profile: Profile, device: torch.device) -> Task:
    if spec == "reference":
        return Task("reference", nn.Identity(), reference_loss)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise InputError(f"--task {spec!r}: 'reference' or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise InputError(f"--task {spec!r}: cannot load ({err})") from None
    made = factory(profile=profile, device=device)
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module) and callable(made[1])):
        raise InputError(f"--task {spec!r}: the factory must return (torch module, loss function)")
    return Task(spec, made[0].to(device), made[1])
