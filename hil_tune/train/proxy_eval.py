"""How faithfully a proxy imitates its device, measured against the device itself.

- fidelity on held-out samples (unseen images, unseen parameter sets): PSNR and SSIM of proxy
  vs device output, mean, median and worst 5%;
- sensitivity: one parameter varied at a time across the dataset's region, the device and the
  proxy side by side (what the proxy does not follow shows as diverging curves);
- rank agreement: for fixed images, Spearman correlation between the proxy's loss and the
  device's loss against the reference over parameter sets (what an optimiser through the proxy
  depends on);
- a figure of device vs proxy outputs.

The device is driven through the driver interface with RAW injection (by default the simulator
with the firmware variant recorded in the dataset), so the same report works on a board.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file-only backend
import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from hil_tune.drivers.base import Driver
from hil_tune.drivers.registry import create_driver
from hil_tune.errors import InputError
from hil_tune.metrics import psnr
from hil_tune.models.isp_blocks import CFAS
from hil_tune.params import ParamDict, Region
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame
from hil_tune.train.data import SweepDataset
from hil_tune.train.proxy_train import TrainConfig, dataset_id, load_proxy, make_split


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "worst5": None, "n": 0}
    v = np.sort(np.asarray(values))
    k = max(1, int(np.ceil(0.05 * len(v))))
    return {"mean": float(v.mean()), "median": float(np.median(v)), "worst5": float(v[:k].mean()), "n": len(v)}


class ProxyRunner:
    def __init__(self, model: torch.nn.Module, profile: Profile) -> None:
        self.model, self.space = model, profile.space

    def _batch(self, frame: RawFrame, params_list: list[ParamDict]) -> tuple[torch.Tensor, ...]:
        mosaic = torch.from_numpy(frame.normalized())[None, None].repeat(len(params_list), 1, 1, 1)
        cfa = torch.full((len(params_list),), CFAS.index(frame.cfa))
        u = torch.tensor(np.stack([self.space.encode(p) for p in params_list]), dtype=torch.float32)
        return mosaic, cfa, u

    @staticmethod
    def _images(out: torch.Tensor) -> list[np.ndarray]:
        return [o.permute(1, 2, 0).numpy() for o in out.clamp(0, 1)]

    @torch.no_grad()
    def __call__(self, frame: RawFrame, params_list: list[ParamDict]) -> list[np.ndarray]:
        """The proxy's outputs for one frame under each parameter set."""
        return self._images(self.model(*self._batch(frame, params_list)))

    @torch.no_grad()
    def with_blocks(self, frame: RawFrame, params: ParamDict) -> tuple[np.ndarray, np.ndarray | None]:
        """(the proxy's output, a grey-box's declared blocks alone or None) in one forward pass."""
        batch = self._batch(frame, [params])
        if not hasattr(self.model, "with_blocks"):
            return self._images(self.model(*batch))[0], None
        full, blocks = self.model.with_blocks(*batch)
        return self._images(full)[0], self._images(blocks)[0]


def error_budget(blocks_psnrs: list[float] | None, profile: Profile, curves: dict[str, Any]) -> dict[str, Any] | None:
    """Where a grey-box's error is, from the device's outputs alone (so it works on any device):
    its learnt blocks without the residual network on the unseen images (PSNRs from the fidelity
    pass), against the whole proxy, and, per block (the profile's knob groups), the worst and
    mean PSNR of its knobs' sensitivity curves. None for a proxy without blocks (the U-Net)."""
    if blocks_psnrs is None:
        return None
    by_block: dict[str, dict[str, Any]] = {}
    for spec in profile.space:
        if spec.name in curves:
            entry = by_block.setdefault(spec.group, {"knobs": [], "psnr": []})
            entry["knobs"].append(spec.name)
            entry["psnr"].extend(curves[spec.name]["psnr"])
    blocks = {
        group: {"knobs": e["knobs"], "worst_psnr": float(min(e["psnr"])), "mean_psnr": float(np.mean(e["psnr"]))}
        for group, e in sorted(by_block.items(), key=lambda kv: min(kv[1]["psnr"]))
    }
    note = ("blocks without residual: the grey-box's declared and learnt blocks alone on the unseen images; "
            "by_block: the sensitivity curves' PSNR grouped by the profile's knob groups, worst first")  # fmt: skip
    return {"blocks_without_residual_psnr": _stats(blocks_psnrs), "by_block": blocks, "note": note}


def device_for(ds: SweepDataset, profile: Profile, driver: str | None, options: dict[str, Any]) -> Driver:
    """The device the dataset came from: the named driver, or the simulator running the same firmware."""
    if driver is None:
        return create_driver("sim", profile, firmware=ds.reader.firmware_variant(), sensor_size=32)
    return create_driver(driver, profile, **options)


def fidelity(
    proxy: ProxyRunner, ds: SweepDataset, groups: dict[str, list[int]]
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray, np.ndarray]], dict[str, list[float] | None]]:
    """PSNR and SSIM of the proxy against the recorded device outputs, per group of held-out
    positions; up to four (label, device, proxy) images to show; and per group the PSNRs of a
    grey-box's blocks alone, from the same forward passes (None for a proxy without blocks)."""
    found: dict[str, Any] = {}
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []
    blocks_psnrs: dict[str, list[float] | None] = {}
    for name, positions in groups.items():
        psnrs, ssims, alone = [], [], []
        for pos in positions:
            sample = ds.reader.sample(ds.indices[pos])
            pred, blocks = proxy.with_blocks(sample.frame(), sample.meta["params_applied"])
            target = sample.output.astype(np.float32) / 255
            psnrs.append(psnr(pred, target))
            ssims.append(float(structural_similarity(pred, target, channel_axis=-1, data_range=1.0)))
            if blocks is not None:
                alone.append(psnr(blocks, target))
            if len(shown) < 4:
                shown.append((f"#{sample.index} {pred.shape[1]}px", target, pred))
        found[name] = {"psnr": _stats(psnrs), "ssim": _stats(ssims)}
        blocks_psnrs[name] = alone if hasattr(proxy.model, "with_blocks") else None
    return found, shown, blocks_psnrs


def sensitivity(
    proxy: ProxyRunner,
    on_device: Callable[[RawFrame, ParamDict], np.ndarray],
    frame: RawFrame,
    base: ParamDict,
    profile: Profile,
    region: Region,
    points: int,
    only: list[str] | None,
) -> dict[str, Any]:
    """One knob at a time across the region around `base`: device and proxy mean levels, and the
    PSNR between them at each value."""
    curves: dict[str, Any] = {}
    for j, spec in enumerate(profile.space):
        if only is not None and spec.name not in only:
            continue
        values = sorted(
            {spec.decode(u) for u in np.linspace(region.lower[j], region.upper[j], points)}, key=spec.encode
        )
        if len(values) < 2:
            continue
        sets = [{**base, spec.name: v} for v in values]
        dev = [on_device(frame, p) for p in sets]
        prx = proxy(frame, sets)
        curves[spec.name] = {
            "values": values,
            "device_mean": [float(d.mean()) for d in dev],
            "proxy_mean": [float(q.mean()) for q in prx],
            "psnr": [psnr(q, d) for q, d in zip(prx, dev, strict=True)],
        }
    return curves


def evaluate_proxy(
    run_dir: Path,
    dataset: Path,
    out: Path,
    *,
    driver: str | None = None,
    driver_options: dict[str, Any] | None = None,
    sensitivity_points: int = 5,
    rank_images: int = 3,
    rank_sets: int = 12,
    seed: int = 0,
    sensitivity_params: list[str] | None = None,
) -> dict[str, Any]:
    model, side = load_proxy(run_dir)
    profile = Profile.model_validate(side["profile_data"])
    ds = SweepDataset(dataset)
    same = side["dataset"]["id"] == dataset_id(dataset)
    note = "held-out split of the training dataset" if same else "evaluated on a different dataset than its training's"
    cfg = TrainConfig(**side["train"])
    split = make_split(ds, cfg)
    if not (split.val_sources or split.val_params):
        raise InputError(
            f"{dataset}: the run's split holds no sample out ({len(ds)} samples, "
            f"val-sources {cfg.val_sources}, val-params {cfg.val_params}): nothing unseen to evaluate on"
        )
    proxy = ProxyRunner(model, profile)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"run": str(run_dir), "model": side["model"], "dataset": str(dataset), "note": note}

    # 1. Fidelity on held-out samples, from the recorded device outputs.
    report["fidelity"], shown, blocks_psnrs = fidelity(
        proxy, ds, {"unseen_images": split.val_sources, "unseen_settings": split.val_params}
    )

    held = [ds.indices[p] for p in (split.val_sources or split.val_params)]
    region = ds.reader.plan.sampling_box()
    with device_for(ds, profile, driver, driver_options or {}) as device:

        def on_device(frame: RawFrame, params: ParamDict) -> np.ndarray:
            device.set_params(params)
            return device.capture(frame).image.astype(np.float32) / 255

        # 2. Sensitivity: one parameter at a time around the first held-out sample.
        base_sample = ds.reader.sample(held[0])
        curves = sensitivity(proxy, on_device, base_sample.frame(), dict(base_sample.meta["params_applied"]), profile,
                             region, sensitivity_points, sensitivity_params)  # fmt: skip
        budget = error_budget(
            blocks_psnrs["unseen_images" if split.val_sources else "unseen_settings"], profile, curves
        )
        report["sensitivity"], report["error_budget"] = curves, budget

        # 3. Rank agreement of losses against the reference over parameter sets.
        with_ref = [i for i in held if ds.reader.sample(i).reference is not None][:rank_images]
        rhos = []
        sets = profile.space.sample_params(rank_sets, seed=seed + 17, region=region)
        for index in with_ref:
            sample = ds.reader.sample(index)
            frame, ref = sample.frame(), sample.reference.astype(np.float32) / 255
            dev_loss = [float(np.mean((on_device(frame, p) - ref) ** 2)) for p in sets]
            prx_loss = [float(np.mean((q - ref) ** 2)) for q in proxy(frame, sets)]
            rhos.append(float(spearmanr(dev_loss, prx_loss).statistic))
        report["rank_agreement"] = {
            "spearman_mean": float(np.mean(rhos)) if rhos else None, "per_image": rhos,
            "images": len(rhos), "parameter_sets": rank_sets,
            "note": "" if rhos else "no held-out sample has a reference image (RAW sources only)",
        }  # fmt: skip

    _plot_sensitivity(curves, out / "sensitivity.png")
    _plot_side_by_side(shown, out / "side_by_side.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _plot_sensitivity(curves: dict[str, Any], path: Path) -> None:
    n = len(curves)
    cols = 5
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items(), strict=False):
        x = list(range(len(c["values"]))) if isinstance(c["values"][0], str) else c["values"]
        ax.plot(x, c["device_mean"], "o-", label="device")
        ax.plot(x, c["proxy_mean"], "s--", label="proxy")
        if isinstance(c["values"][0], str):
            ax.set_xticks(x, c["values"], fontsize=6)
        ax.set_title(f"{name} (min {min(c['psnr']):.0f} dB)", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("mean output vs one parameter (others fixed): device and proxy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_side_by_side(shown: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 3, figsize=(7.5, 2.5 * len(shown)), squeeze=False)
    for row, (label, dev, prx) in zip(axes, shown, strict=True):
        for ax, img, title in zip(row, (dev, prx, np.clip(np.abs(dev - prx) * 4, 0, 1)),
                                  ("device", "proxy", "|difference| x4"), strict=True):  # fmt: skip
            ax.imshow(img)
            ax.set_title(f"{title} {label}" if title == "device" else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
