"""Proxy training: L2 to the ISP's output, the paper's optimiser by default, resumable, DDP-ready.

Split: samples of held-out *sources* (images never seen) and held-out *parameter sets* (a share of
the remaining samples: seen images, unseen settings) are both kept out of training and reported
separately. Runs under `torchrun --nproc-per-node N` with DistributedDataParallel when WORLD_SIZE
is set (gloo on CPU, nccl on CUDA); rank 0 writes the run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from hil_tune.capture.sources import photo_of
from hil_tune.metrics import psnr_batch
from hil_tune.models.output_cache import OutputCache
from hil_tune.models.proxy import STRUCTURE, ProxyConfig, build_proxy
from hil_tune.profiles import Profile
from hil_tune.train import checkpoint
from hil_tune.train.curves import plot_curves
from hil_tune.train.data import SweepDataset, SweepUnion, split_by_source
from hil_tune.train.steps import run_epoch

# Learning-rate schedules; the first is the default (measured: cosine lost 0.5 dB on foreign).
LR_SCHEDULES = ("step", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch: int = 8
    optimizer: str = "rmsprop"  # the paper's; "adam" converges faster on small CPU budgets
    lr: float = 1e-4
    lr_step: int = 10  # epochs between decays
    lr_gamma: float = 0.9
    lr_schedule: str = LR_SCHEDULES[0]  # "step": x lr_gamma every lr_step epochs; "cosine": to 0 over `epochs`
    val_sources: float = 0.2  # share of sources held out
    val_params: float = 0.1  # share of the other samples held out (unseen parameter sets)
    seed: int = 0
    device: str = "cpu"
    structure_lr_scale: float = 10.0  # learning-rate multiple for a grey-box's learnt structure
    probe_steps: int = 60  # steps of the structure probe before training (0: none); see probe_structure
    probe_crop: int = 64  # centre crop the probe trains on (the collaborative filter's cost grows with area)
    # After the probe, freeze a grey-box's denoiser noise scales and filter each sample once per run
    # (GreyboxProxy.cache_denoiser); 0 turns it off. Budget in MiB of cached outputs.
    denoise_cache_mib: int = 2048


@dataclass
class Split:
    train: list[int]
    val_sources: list[int]
    val_params: list[int]
    held_out_sources: list[str]


def dataset_id(root: Path | list[Path]) -> str:
    """The plan's digest; for several datasets, a digest of theirs in order."""
    if isinstance(root, list):
        if len(root) == 1:
            return dataset_id(root[0])
        return hashlib.sha256("".join(dataset_id(r) for r in root).encode()).hexdigest()
    return hashlib.sha256((root / "plan.json").read_bytes()).hexdigest()


def make_split(ds: SweepDataset | SweepUnion, cfg: TrainConfig) -> Split:
    """Positions into `ds`. Held-out sources by a stable hash of their ids; held-out parameter sets
    by a stable hash of the plan index, so a resumed or repeated run splits identically."""
    sources = ds.split_sources()
    several_photos = len({photo_of(s) for s in sources}) > 1
    _, val_src = split_by_source(sources, cfg.val_sources, cfg.seed) if several_photos else (set(sources), set())
    val_photos = {photo_of(s) for s in val_src}
    train, v_src, v_par = [], [], []
    for pos in range(len(ds)):
        if photo_of(ds.source_at(pos)) in val_photos:
            v_src.append(pos)
        elif (zlib.crc32(f"{cfg.seed}:{ds.split_key(pos)}".encode()) % 1000) / 1000 < cfg.val_params:
            v_par.append(pos)
        else:
            train.append(pos)
    if not train:
        raise checkpoint.TrainSettingError("no training samples left after the split; capture more samples or sources")
    return Split(train, v_src, v_par, sorted({ds.source_at(p) for p in v_src}))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float | None:
    model.eval()
    values = []
    for batch in loader:
        pred = model(batch["mosaic"].to(device), batch["cfa"].to(device), batch["encoded"].to(device))
        values.append(psnr_batch(pred, batch["output"].to(device)).cpu())
    model.train()
    return float(torch.cat(values).mean()) if values else None


# The documented default recipe per model kind (`hil-tune train proxy` and benchmarks/proxy.py use
# it): the paper's RMSprop at 1e-4 for its U-Net; Adam at 1e-3 for the grey-box, whose learnt
# structure is a few dozen numbers that RMSprop at 1e-4 moves too slowly for a CPU budget.
RECIPES: dict[str, dict[str, Any]] = {
    "greybox": {"optimizer": "adam", "lr": 1e-3, "lr_schedule": LR_SCHEDULES[0]},
    "unet": {"optimizer": "rmsprop", "lr": 1e-4, "lr_schedule": LR_SCHEDULES[0]},
}


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The learnt structure of a grey-box (a few dozen numbers: choices, curve, laws) at
    `structure_lr_scale` times the rate of the networks, which hold hundreds of thousands."""
    structure = list(getattr(model, "structure_parameters", list)())
    ids = {id(p) for p in structure}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": cfg.lr}]
    if structure:
        groups.append({"params": structure, "lr": cfg.lr * cfg.structure_lr_scale})
    return groups


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's step decay, or a cosine decay to 0 at the last epoch, whose last epochs settle
    instead of jumping about at nearly the starting rate."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(param_groups(model, cfg))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups(model, cfg))
    raise checkpoint.TrainSettingError(f"unknown optimizer {cfg.optimizer!r} (rmsprop, adam)")


def probe_structure(model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Decide a grey-box's structural choices on a budget before training it.

    Why: every candidate block of an undecided choice is computed on every sample, and BM3D's
    collaborative filter costs ten times the rest of the proxy. A few dozen steps on centre crops,
    training the structure alone (the residual network is still near zero), show which candidates
    the device's samples support; those below `PROBE_KEEP` of their choice are pruned before the
    first epoch. What is left undecided is decided by the epoch-end pruning.
    """
    params = list(model.probe_parameters())
    if not params or cfg.probe_steps <= 0:
        return {}
    keep = {id(p) for p in params}
    frozen = [p for p in model.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=PROBE_LR)
    crop = cfg.probe_crop // 4 * 4
    steps, losses = 0, []
    try:
        while steps < cfg.probe_steps:
            for batch in loader:
                mosaic, target = batch["mosaic"], batch["output"]
                h, w = mosaic.shape[-2:]
                if crop and crop < min(h, w):
                    y, x = (h - crop) // 4 * 2, (w - crop) // 4 * 2  # even offsets keep the CFA
                    mosaic, target = mosaic[..., y : y + crop, x : x + crop], target[..., y : y + crop, x : x + crop]
                pred = model(mosaic.to(device), batch["cfa"].to(device), batch["encoded"].to(device))
                loss = nn.functional.mse_loss(pred, target.to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                steps += 1
                if steps >= cfg.probe_steps:
                    break
    finally:
        for p in frozen:
            p.requires_grad_(True)
    weights = model.structure()
    pruned = {}
    for name, choice in model.choices().items():
        threshold, choice.threshold = choice.threshold, PROBE_KEEP
        dropped = choice.prune()
        choice.threshold = threshold
        if dropped:
            pruned[name] = dropped
    return {"steps": steps, "crop": crop, "loss_first": losses[0], "loss_last": losses[-1],
            "weights": weights, "pruned": pruned}  # fmt: skip


PROBE_LR = 0.05
PROBE_KEEP = 0.2


def _check_choices(cfg: TrainConfig) -> None:
    if cfg.optimizer not in ("rmsprop", "adam"):
        raise checkpoint.TrainSettingError(f"--optimizer {cfg.optimizer!r}: choose rmsprop or adam")
    if cfg.denoise_cache_mib < 0:
        raise checkpoint.TrainSettingError(f"--denoise-cache-mib {cfg.denoise_cache_mib}: 0 (off) or a size in MiB")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise checkpoint.TrainSettingError(f"--lr-schedule {cfg.lr_schedule!r}: choose {' or '.join(LR_SCHEDULES)}")
    if cfg.probe_steps < 0:
        raise checkpoint.TrainSettingError(f"--probe-steps {cfg.probe_steps}: 0 (no probe) or a number of steps")


def prepare_structure(
    model: nn.Module, train_set: Subset, cfg: TrainConfig, device: torch.device, *, probe: bool
) -> dict[str, Any] | None:
    """Before the first epoch (and DDP): the structure probe on a fresh run (its findings, or None),
    then the denoiser cache, which freezes the noise scales the probe learnt."""
    found = None
    if probe and hasattr(model, "probe_parameters"):
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        found = probe_structure(
            model, DataLoader(train_set, batch_size=cfg.batch, shuffle=True, generator=gen), cfg, device
        )
    if cfg.denoise_cache_mib > 0 and hasattr(model, "cache_denoiser"):
        model.cache_denoiser(OutputCache(cfg.denoise_cache_mib << 20))
    return found


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if torch.cuda.is_available() and os.environ.get("HIL_TUNE_DEVICE") == "cuda" else "gloo"
        )
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _sidecar_base(
    datasets: list[Path], profile: Profile, model_cfg: ProxyConfig, cfg: TrainConfig, samples: int, split: Split,
    world: int,
) -> dict[str, Any]:  # fmt: skip
    """What a proxy run's sidecar says before its first epoch: enough to load it without the dataset.
    `path` is the first sweep (its region and held-out photos); `parts` every dataset trained on."""
    dataset = datasets[0]
    return {
        "profile": profile.name, "profile_sha256": profile.sha256, "profile_data": profile.model_dump(mode="json"),
        "param_names": profile.space.names,
        "encoding": checkpoint.encoding_of(profile), "model": model_cfg.as_dict(), "train": asdict(cfg),
        "structure": STRUCTURE.get(model_cfg.kind),
        "dataset": {"path": str(dataset), "id": dataset_id(datasets), "samples": samples,
                    **({"parts": [str(d) for d in datasets]} if len(datasets) > 1 else {})},
        "split": {"train": len(split.train), "val_sources": len(split.val_sources),
                  "val_params": len(split.val_params), "held_out_sources": split.held_out_sources},
        "world_size": world,
    }  # fmt: skip


def _resume(
    ckpt_path: Path,
    profile: Profile,
    sidecar_base: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[list[dict[str, Any]], int]:
    """Load a checkpoint of the same model and dataset into model, optimiser, scheduler and RNG;
    returns (history so far, the epoch to start at)."""
    state, side = checkpoint.load(ckpt_path, profile)
    same_model = side["model"] == sidecar_base["model"] and side.get("structure", 1) == sidecar_base["structure"]
    if not same_model or side["dataset"]["id"] != sidecar_base["dataset"]["id"]:
        raise checkpoint.CheckpointError(f"{ckpt_path}: --resume with another model configuration or dataset")
    schedule = (side["train"].get("lr_schedule", "step"), sidecar_base["train"]["lr_schedule"])
    if schedule[0] != schedule[1]:
        raise checkpoint.CheckpointError(f"{ckpt_path}: the run used --lr-schedule {schedule[0]}, not {schedule[1]}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    sidecar_base["probe"] = side.get("probe", {})
    return side.get("history", []), int(state["epoch"]) + 1


def _batch_loss(net: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, int]:
    """L2 to the device's output, the paper's proxy loss."""
    pred = net(batch["mosaic"].to(device), batch["cfa"].to(device), batch["encoded"].to(device))
    return nn.functional.mse_loss(pred, batch["output"].to(device)), len(pred)


def _initial_weights(model: nn.Module, init: Path, profile: Profile, model_cfg: ProxyConfig) -> dict[str, Any]:
    """Start from a trained proxy run's weights (fine-tuning on more data): same model and profile."""
    state, side = checkpoint.load(init / "model.pt", profile)
    if side["model"] != model_cfg.as_dict() or side.get("structure", 1) != STRUCTURE.get(model_cfg.kind):
        raise checkpoint.CheckpointError(f"{init}: a proxy of another configuration than {model_cfg.as_dict()}")
    model.load_state_dict(state["model"])
    return {"run": str(init.resolve()), "dataset_id": side["dataset"]["id"], "epoch": side.get("epoch")}


def _check_and_seed(cfg: TrainConfig, model_cfg: ProxyConfig) -> None:
    """Refuse bad settings before anything is built; seed; deterministic kernels (resume equality)."""
    checkpoint.check_positive(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, lr_step=cfg.lr_step,
                              lr_gamma=cfg.lr_gamma, width=model_cfg.width, depth=model_cfg.depth)  # fmt: skip
    _check_choices(cfg)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _open_datasets(dataset: Path | list[Path]) -> tuple[list[Path], SweepDataset | SweepUnion]:
    datasets = dataset if isinstance(dataset, list) else [dataset]
    return datasets, SweepUnion(datasets) if len(datasets) > 1 else SweepDataset(datasets[0])


def train_proxy(
    dataset: Path | list[Path],
    out: Path,
    profile: Profile,
    model_cfg: ProxyConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train and return the final sidecar (metrics included). Several datasets (of one profile)
    train as one, the first deciding the held-out photos; `init` starts from a trained proxy run's
    weights and learnt structure (no structure probe): fine-tuning, as `hil-tune refine` does."""
    _check_and_seed(cfg, model_cfg)
    rank, world = _distributed()
    device = torch.device(cfg.device if cfg.device == "cpu" else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    datasets, ds = _open_datasets(dataset)
    split = make_split(ds, cfg)
    model = build_proxy(profile, model_cfg).to(device)
    started_from = _initial_weights(model, init, profile, model_cfg) if init is not None else None
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    history: list[dict[str, Any]] = []
    start_epoch, ckpt_path = 0, out / "checkpoint.pt"
    sidecar_base = _sidecar_base(datasets, profile, model_cfg, cfg, len(ds), split, world)
    sidecar_base.update({"init": started_from} if started_from is not None else {})
    if resume and ckpt_path.exists():
        history, start_epoch = _resume(ckpt_path, profile, sidecar_base, model, opt, sched)
    train_set = Subset(ds, split.train)
    probe = prepare_structure(model, train_set, cfg, device, probe=start_epoch == 0 and init is None)
    if probe is not None:
        sidecar_base["probe"] = probe
    net: nn.Module = model
    if world > 1:
        # Pruned candidate blocks take no gradient: DDP must not wait for them.
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=hasattr(model, "end_epoch"))
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loaders = {
        name: DataLoader(Subset(ds, idx), batch_size=cfg.batch) for name, idx in
        (("val_sources", split.val_sources), ("val_params", split.val_params))
    }  # fmt: skip
    for epoch in range(start_epoch, cfg.epochs):
        gen.manual_seed(cfg.seed * 1000 + epoch)  # the epoch's order does not depend on a resume
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=cfg.batch, shuffle=sampler is None, sampler=sampler, generator=gen)
        run = run_epoch(loader, lambda b: _batch_loss(net, b, device), opt, epoch, distributed=world > 1,
                        on_batch=on_batch if rank == 0 else None)  # fmt: skip
        sched.step()
        pruned = model.end_epoch(epoch) if hasattr(model, "end_epoch") else {}
        if rank == 0:
            record = {"epoch": epoch, "train_loss": run.mean_loss, "seconds": round(run.seconds, 3),
                      "samples_per_s": round(run.samples * world / run.seconds, 3),
                      "lr": opt.param_groups[0]["lr"]}  # fmt: skip
            if hasattr(model, "structure"):
                record["structure"] = model.structure()
                record["pruned"] = pruned
            for name, vl in loaders.items():
                record[f"{name}_psnr"] = evaluate(model, vl, device)
            history.append(record)
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "rng": torch.get_rng_state()}  # fmt: skip
            checkpoint.save(ckpt_path, state, {**sidecar_base, "epoch": epoch, "history": history, "metrics": record})
            if epoch % 5 == 4 or epoch == cfg.epochs - 1:  # a plot costs more than a small epoch
                plot_curves(history, out / "curves.png", f"{model_cfg.kind} proxy on {datasets[0].name}")
            if on_epoch:
                on_epoch(record)
        if world > 1:
            dist.barrier()
    final = {**sidecar_base, "epoch": cfg.epochs - 1, "history": history, "metrics": history[-1] if history else {}}
    if rank == 0:
        checkpoint.save(out / "model.pt", {"model": model.state_dict()}, final)
        (out / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def load_proxy(run_dir: Path, profile: Profile | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained proxy of a run folder (eval mode) and its sidecar."""
    state, side = checkpoint.load(run_dir / "model.pt", profile)
    prof = profile
    if prof is None:
        # The run folder carries its profile: it must not depend on where the dataset was (or is).
        prof = Profile.model_validate(side["profile_data"])
        if prof.sha256 != side.get("profile_sha256"):
            raise checkpoint.CheckpointError(
                f"{run_dir}: the profile in the sidecar does not match its hash; the run folder was edited"
            )
    config = ProxyConfig(**side["model"])
    if side.get("structure", 1) != STRUCTURE.get(config.kind):
        raise checkpoint.CheckpointError(
            f"{run_dir}: a {config.kind} proxy of structure {side.get('structure', 1)}, this hil-tune builds "
            f"structure {STRUCTURE.get(config.kind)} (same weights, different computation): retrain it"
        )
    model = build_proxy(prof, config)
    model.load_state_dict(state["model"])
    model.eval()
    return model, side
