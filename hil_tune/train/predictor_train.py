"""Predictor training: through the frozen proxy, only the predictor learns the task.

Inputs are the distinct RAW patches of the dataset's training sources (a sweep holds each patch
under many parameter sets; the predictor needs each image once). The sources the proxy held out
stay out here too, so evaluation images are unseen by both networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Subset

from hil_tune.capture.sources import photo_of, resolve_sources, source_from_id
from hil_tune.errors import InputError
from hil_tune.models.predictor import AttentionPredictor, PredictorConfig
from hil_tune.profiles import Profile
from hil_tune.train import checkpoint
from hil_tune.train.curves import plot_curves
from hil_tune.train.data import SweepDataset
from hil_tune.train.image_crops import ImageCrops
from hil_tune.train.proxy_train import dataset_id, load_proxy
from hil_tune.train.steps import run_epoch
from hil_tune.train.tasks import load_task


@dataclass
class PredictorTrainConfig:
    epochs: int = 30
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    crop: int = 128  # with training images: crop size (the paper slices 512 px)
    crops_per_image: int = 4  # with training images: crops (and camera draws) of each photo per epoch
    lr_schedule: str = "constant"  # or "cosine": lr decays to 0 over `epochs` (LR_SCHEDULES)
    ema: float = 0.0  # per-step decay of a moving average of the weights, scored and kept (0: none)
    held_out_crops: int = 0  # with training images: fixed crops of each held-out photo (0: sweep patches)


# Per-epoch learning-rate laws. Fresh crops and camera draws each epoch make the task loss noisy
# from one step to the next, and at a constant rate the held-out loss sits on a noisy plateau
# (docs/predictor.md); a cosine decay lets the last epochs settle. On held-out photos it did not
# help (predictor_variant.py --lr-schedule cosine, 2026-12-04: 24.66 against 25.14 dB), so the
# default stays constant.
LR_SCHEDULES = ("constant", "cosine")


def _optimiser(
    model: torch.nn.Module, cfg: PredictorTrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and its per-epoch schedule (torch's own, so a checkpoint carries its state)."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"unknown learning-rate schedule {cfg.lr_schedule!r}; expected one of {LR_SCHEDULES}")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if cfg.lr_schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return opt, torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def distinct_patches(ds: SweepDataset, exclude_sources: set[str]) -> tuple[list[int], list[int]]:
    """(train positions, held-out positions): one per distinct (source, patch)."""
    seen: set[tuple[str, Any]] = set()
    train, held = [], []
    for pos, index in enumerate(ds.indices):
        row = ds.reader.rows[index]
        key = (row.source, row.patch)
        if key in seen:
            continue
        seen.add(key)
        (held if row.source in exclude_sources else train).append(pos)
    return train, held


def build_predictor(
    profile: Profile, lower: list[float], upper: list[float], config: PredictorConfig
) -> AttentionPredictor:
    return AttentionPredictor(len(profile.space), lower, upper, config)


def _proxy_record(proxy_run: Path, proxy_side: dict[str, Any]) -> dict[str, Any]:
    """The proxy a predictor was trained through, by absolute path: tuning descends through it
    later, from whatever folder the user is in."""
    metrics = proxy_side.get("metrics", {})
    return {"run": str(Path(proxy_run).resolve()), "model": proxy_side["model"], "metrics": metrics}


def _frozen_proxy(proxy_run: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], Profile]:
    """The proxy a predictor trains through, with no gradient for its own weights."""
    proxy, side = load_proxy(proxy_run)
    proxy = proxy.to(device)
    for p in proxy.parameters():
        p.requires_grad_(False)
    return proxy, side, Profile.model_validate(side["profile_data"])


def _training_crops(
    images: list[str], held_sources: set[str], profile: Profile, cfg: PredictorTrainConfig
) -> ImageCrops:
    """Fresh crops and camera draws of `images` each epoch; refused if any shows a held-out photo."""
    sources = resolve_sources(images)
    held_photos = {photo_of(h) for h in held_sources}
    leaked = sorted({s.id for s in sources if photo_of(s.id) in held_photos})
    if leaked:
        raise InputError(f"training images show the proxy's held-out photos: {', '.join(leaked)}")
    return ImageCrops(sources, profile, cfg.crop, cfg.crops_per_image, cfg.seed)


def _sidecar_base(
    dataset: Path,
    ds: SweepDataset,
    profile: Profile,
    config: PredictorConfig,
    cfg: PredictorTrainConfig,
    task_spec: str,
    region: tuple[list[float], list[float]],
    proxy_run: Path,
    proxy_side: dict[str, Any],
    patches: tuple[list[int], list[int], set[str]],
    crops: ImageCrops | None,
) -> dict[str, Any]:
    """What a predictor run's sidecar says: enough to predict without the dataset or its folder."""
    train_pos, held_pos, held_sources = patches
    return {
        "kind": "predictor", "profile": profile.name, "profile_sha256": profile.sha256,
        "profile_data": profile.model_dump(mode="json"), "encoding": checkpoint.encoding_of(profile),
        "model": config.as_dict(), "train": asdict(cfg), "task": task_spec,
        "region": {"lower": region[0], "upper": region[1]},
        "proxy": _proxy_record(proxy_run, proxy_side),
        "firmware": ds.reader.firmware_variant(), "device": ds.reader.sample(ds.indices[0]).meta.get("device", {}),
        "dataset": {"path": str(dataset), "id": dataset_id(dataset), "train_patches": len(train_pos),
                    "held_out_patches": len(held_pos), "held_out_sources": sorted(held_sources),
                    "train_sources": sorted({s.id for s in crops.sources} if crops is not None
                                            else {ds.reader.rows[ds.indices[p]].source for p in train_pos}),
                    "trained_on": "image crops" if crops is not None else "sweep patches"},
    }  # fmt: skip


def _initial_weights(
    model: torch.nn.Module,
    init: Path,
    profile: Profile,
    config: PredictorConfig,
    region: tuple[list[float], list[float]],
) -> dict[str, Any]:
    """A trained predictor run's weights, refused unless its network, profile and region match."""
    state, side = checkpoint.load(init / "model.pt", profile)
    if side.get("kind") != "predictor" or side["model"] != config.as_dict():
        raise checkpoint.CheckpointError(f"{init}: not a predictor of configuration {config.as_dict()}")
    if [side["region"]["lower"], side["region"]["upper"]] != [list(region[0]), list(region[1])]:
        raise checkpoint.CheckpointError(f"{init}: trained for another region than this dataset's")
    model.load_state_dict(state["model"])
    return {"run": str(init.resolve()), "epoch": side.get("epoch")}


def _resume(
    ckpt: Path,
    profile: Profile,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    averaged: AveragedModel | None,
) -> tuple[list[dict[str, Any]], int]:
    state, side = checkpoint.load(ckpt, profile)
    model.load_state_dict(state["model"])
    if (averaged is not None) != ("ema" in state):
        said = "with --ema; resume it with the same" if "ema" in state else "without --ema; resume it with --ema 0"
        raise checkpoint.CheckpointError(f"{ckpt}: trained {said}")
    if averaged is not None:
        averaged.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    if "scheduler" in state:  # checkpoints before schedules existed ran at a constant rate
        sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return side.get("history", []), int(state["epoch"]) + 1


def _held_out_set(
    ds: SweepDataset,
    held_pos: list[int],
    held_sources: set[str],
    profile: Profile,
    cfg: PredictorTrainConfig,
    crops: ImageCrops | None,
) -> tuple[Dataset, str]:
    """The images that choose the kept epoch, and what they are. Training on image crops, they are
    fixed crops of the held-out photos at the training size (cfg.held_out_crops each, own draws): the
    sweep's patches are smaller than the crops the predictor sees and is judged on (on the benchmark
    it made no difference beyond run-to-run noise: docs/predictor.md). The held-out files are only
    looked up when asked for, so a sweep whose sources have moved still trains."""
    asked = crops is not None and cfg.held_out_crops > 0
    sources = [source_from_id(p) for p in sorted({photo_of(h) for h in held_sources})] if asked else []
    if not sources or any(s.kind not in ("srgb", "bundled") for s in sources):
        return Subset(ds, held_pos), "sweep patches"
    held = ImageCrops(sources, profile, cfg.crop, cfg.held_out_crops, cfg.seed + 1)
    held.set_epoch(0)
    return held, f"{cfg.held_out_crops} crops of {cfg.crop} px of each held-out photo"


def _averaged(model: torch.nn.Module, cfg: PredictorTrainConfig) -> AveragedModel | None:
    """An exponential moving average of the weights (torch's own), or None. Fresh crops and draws
    make each step's gradient noisy; the average is what the held-out set scores and what is kept."""
    if not 0.0 <= cfg.ema < 1.0:
        raise InputError(f"--ema {cfg.ema}: the decay must be in [0, 1)")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None


def _after_batch(
    model: torch.nn.Module, averaged: AveragedModel | None, on_batch: Callable[[int, int, float], None] | None
) -> Callable[[int, int, float], None] | None:
    """The per-step hook: the moving average follows each optimiser step, then the caller's hook."""
    if averaged is None:
        return on_batch

    def step(done: int, steps: int, loss: float) -> None:
        averaged.update_parameters(model)
        if on_batch:
            on_batch(done, steps, loss)

    return step


def _best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch whose weights are kept: the lowest held-out loss, since with a few dozen training
    images the predictor starts to memorise them long before the last epoch."""
    scored = [h for h in history if h.get("held_out_loss") is not None]
    return min(scored, key=lambda h: h["held_out_loss"], default=None)


def _fit_statistics(model: AttentionPredictor, train_set: Dataset, n: int = 64) -> None:
    """Standardise the predictor's global statistics over the first `n` training images (the first
    epoch's crops: the same on a resumed run, whose checkpoint holds them anyway)."""
    if model.stats is None:
        return
    if isinstance(train_set, ImageCrops):
        train_set.set_epoch(0)
    model.fit_stats(torch.stack([train_set[i]["raw"] for i in range(min(n, len(train_set)))]))  # type: ignore[arg-type]


def _task_loss(
    model: torch.nn.Module, proxy: torch.nn.Module, task: Any, batch: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, int]:
    """The task's loss on the proxy's rendering of the predicted settings."""
    u = model(batch["raw"].to(device))
    return task.loss(proxy(batch["mosaic"].to(device), batch["cfa"].to(device), u), batch), len(u)


@torch.no_grad()
def _held_out_loss(
    model: torch.nn.Module, proxy: torch.nn.Module, task: Any, loader: DataLoader, device: torch.device
) -> float | None:
    model.eval()
    losses = [_task_loss(model, proxy, task, b, device)[0].item() for b in loader]
    return sum(losses) / len(losses) if losses else None


def train_predictor(
    dataset: Path,
    proxy_run: Path,
    task_spec: str,
    out: Path,
    config: PredictorConfig,
    cfg: PredictorTrainConfig,
    *,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    images: list[str] | None = None,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train the predictor through the frozen proxy. With `images` (photos, folders, NAME@K,
    bundled), it trains on fresh crops and camera draws of those each epoch (ImageCrops, cfg.crop
    pixels, cfg.crops_per_image a photo) instead of the sweep's patches; the sweep still defines
    the profile, the region and the held-out images. `init` starts from a trained predictor run's
    weights (fine-tuning through a refined proxy, as `hil-tune refine` does)."""
    checkpoint.check_positive(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr)
    device = torch.device(cfg.device)
    proxy, proxy_side, profile = _frozen_proxy(proxy_run, device)
    task = load_task(task_spec, profile, device)
    ds = SweepDataset(dataset)
    if ds.reader.plan.profile_sha256 != profile.sha256:
        raise checkpoint.CheckpointError(f"{dataset}: captured with another profile than the proxy's")
    held_sources = set(proxy_side["split"]["held_out_sources"])
    train_pos, held_pos = distinct_patches(ds, held_sources)
    crops = _training_crops(images, held_sources, profile, cfg) if images else None
    box = ds.reader.plan.sampling_box()
    lower, upper = list(box.lower), list(box.upper)
    torch.manual_seed(cfg.seed)  # here, so the starting weights depend on the seed alone
    model = build_predictor(profile, lower, upper, config).to(device)
    train_set: Dataset = crops if crops is not None else Subset(ds, train_pos)
    if init is None:
        _fit_statistics(model, train_set)
    started_from = _initial_weights(model, init, profile, config, (lower, upper)) if init is not None else None
    opt, sched = _optimiser(model, cfg)
    ckpt = out / "checkpoint.pt"
    base = _sidecar_base(dataset, ds, profile, config, cfg, task_spec, (lower, upper), proxy_run, proxy_side,
                         (train_pos, held_pos, held_sources), crops)  # fmt: skip
    base.update({"init": started_from} if started_from is not None else {})
    averaged = _averaged(model, cfg)
    held_set, base["dataset"]["held_out"] = _held_out_set(ds, held_pos, held_sources, profile, cfg, crops)
    history, start = _resume(ckpt, profile, model, opt, sched, averaged) if resume and ckpt.exists() else ([], 0)
    best = _best_epoch(history)
    held_loader = DataLoader(held_set, batch_size=cfg.batch)
    kept = averaged.module if averaged is not None else model  # what the held-out set scores and is kept
    after_batch = _after_batch(model, averaged, on_batch)
    gen = torch.Generator()
    for epoch in range(start, cfg.epochs):
        gen.manual_seed(cfg.seed * 1000 + epoch)
        if crops is not None:
            crops.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=cfg.batch, shuffle=True, generator=gen)
        model.train()
        run = run_epoch(loader, lambda b: _task_loss(model, proxy, task, b, device), opt, epoch, on_batch=after_batch)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": run.mean_loss, "seconds": round(run.seconds, 3),
                                  "lr": opt.param_groups[0]["lr"],
                                  "held_out_loss": _held_out_loss(kept, proxy, task, held_loader, device)}  # fmt: skip
        sched.step()
        history.append(record)
        if record["held_out_loss"] is not None and (best is None or record["held_out_loss"] < best["held_out_loss"]):
            best = record
            checkpoint.save(out / "best.pt", {"model": kept.state_dict()}, {**base, "epoch": epoch, "metrics": record})
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": epoch, "rng": torch.get_rng_state(),
                 **({"ema": averaged.state_dict()} if averaged is not None else {})}  # fmt: skip
        checkpoint.save(ckpt, state, {**base, "epoch": epoch, "history": history, "metrics": record})
        if epoch % 5 == 4 or epoch == cfg.epochs - 1:  # a plot costs more than a small epoch
            plot_curves(history, out / "curves.png", f"predictor ({task_spec}) on {dataset.name}")
        if on_epoch:
            on_epoch(record)
    return _finish(out, base, history, best, kept, cfg.epochs)


def _finish(
    out: Path,
    base: dict[str, Any],
    history: list[dict[str, Any]],
    best: dict[str, Any] | None,
    kept: torch.nn.Module,
    epochs: int,
) -> dict[str, Any]:
    """Write the run's model.pt: the best held-out epoch's weights, or the last when none scored."""
    chosen = best if best is not None else (history[-1] if history else {})
    final = {
        **base,
        "epoch": chosen.get("epoch", epochs - 1),
        "history": history,
        "metrics": chosen,
        "kept": "lowest held-out loss" if best is not None else "last epoch",
    }
    weights = checkpoint.load(out / "best.pt")[0]["model"] if best is not None else kept.state_dict()
    checkpoint.save(out / "model.pt", {"model": weights}, final)
    return final


def load_predictor(run_dir: Path) -> tuple[AttentionPredictor, dict[str, Any], Profile]:
    state, side = checkpoint.load(run_dir / "model.pt")
    if side.get("kind") != "predictor":
        raise checkpoint.CheckpointError(f"{run_dir}: not a predictor run")
    profile = Profile.model_validate(side["profile_data"])
    config = PredictorConfig.from_dict(side["model"])
    model = build_predictor(profile, side["region"]["lower"], side["region"]["upper"], config)
    model.load_state_dict(state["model"])
    model.eval()
    return model, side, profile
