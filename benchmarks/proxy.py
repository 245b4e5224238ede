"""Proxy benchmark: both models on the same data, on the synthetic firmware, on `foreign`, and on
`handset` and `studio` (firmwares for devices the recipe was not developed against: `--firmwares
handset studio`).

Each firmware has a fixed capture configuration (stated in the JSON, `CONFIGS`):
- synthetic (BM3D costs seconds per sample): the six bundled photos, 24 Latin-hypercube samples
  each, 64x64 patches;
- foreign, handset and studio (milliseconds per sample): four unprocessing draws of each bundled photo
  and two of each photo in HIL_TUNE_PHOTO_DIR (default ../shared/data/photos when present), 32
  samples each, 128x128 patches: 1792 samples, the capture budget the [Unknown ISP] target allows
  2000 for.
All over the synthetic profile's plausible region (noise reduction on), seed 0, split by photo
(every draw of a held-out photo held out) and by parameter set. Each model trains with the
documented default recipe of `hil-tune train proxy` (proxy_train.RECIPES: Adam 1e-3 for the
grey-box, the paper's RMSprop 1e-4 for the U-Net; x0.9 every 10 epochs), for the stated epochs.
Reports held-out PSNR/SSIM, Spearman, training samples/s, and inference ms per 512x512 patch.
Results are merged into benchmarks/results/proxy.json per (firmware, model), so a run of one
firmware keeps the other's figures (each entry carries its own date and configuration).
`--model-epochs unet=200` trains one kind longer than its stated epochs (the paper's U-Net to its
plateau: the JSON keeps the whole curve); `--resume` continues each run from its checkpoint (a
long run split over sessions: `train_seconds` is then the last part's, `curve` the whole run's);
`--carry-runs` keeps each epoch's checkpoint (about 1 MB) in benchmarks/results/carry/FIRMWARE-KIND,
which is committed, and `--resume` starts from it when the work folder has none: a run longer than
a session continues on a fresh clone. `--no-denoise-cache` trains the grey-box with its
collaborative filter run every epoch and its noise scales learning throughout, stored under
"FIRMWARE/greybox-uncached", so the cache's cost in fidelity is measured on the same sweep;
`--lr-schedule cosine|step` trains with another schedule than the recipe's, stored under
"FIRMWARE/KIND-SCHEDULE".
Usage: python benchmarks/proxy.py [--firmwares synthetic foreign] [--models greybox unet] [--work DIR]
       [--model-epochs KIND=N ...] [--resume] [--carry-runs] [--no-denoise-cache] [--lr-schedule S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from provenance import header, photo_dir

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.models.proxy import STRUCTURE, ProxyConfig, build_proxy
from hil_tune.profiles import load_profile
from hil_tune.train.proxy_eval import evaluate_proxy
from hil_tune.train.proxy_train import LR_SCHEDULES, RECIPES, TrainConfig, train_proxy

ROOT = Path(__file__).resolve().parents[1]


def config_for(firmware: str) -> dict:
    if firmware == "synthetic":
        return {"sources": ["bundled"], "samples_per_source": 24, "patch": 64, "epochs": {"greybox": 30, "unet": 30}}
    photos = photo_dir()
    sources = ["bundled@4"] + ([f"{photos}@2"] if photos else [])
    return {"sources": sources, "samples_per_source": 32, "patch": 128, "epochs": {"greybox": 8, "unet": 30}}


def capture(work: Path, firmware: str, sources: list[str], m: int, patch: int) -> Path:
    root = work / f"sweep-{firmware}-{patch}"
    profile = load_profile("synthetic")
    plan = build_plan(profile, resolve_sources(sources), samples_per_source=m, patch=patch, region="plausible")
    finished = (root / "plan.json").exists() and not list((root / "pending").glob("*.tar"))
    if finished and DatasetFolder(root).plan().rows == plan.rows:
        return root  # reuse a finished sweep of the same configuration
    shutil.rmtree(root, ignore_errors=True)
    DatasetFolder(root).create(plan)
    t = time.perf_counter()
    run_capture(root, CaptureSettings("sim", {"firmware": firmware}), workers=os.cpu_count() or 1)
    print(f"captured {len(plan.rows)} {firmware} samples in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def inference_ms(kind: str, device: str, repeats: int = 3) -> float:
    profile = load_profile("synthetic")
    model = build_proxy(profile, ProxyConfig(kind=kind)).to(device).eval()
    mosaic = torch.rand(1, 1, 512, 512, device=device)
    cfa = torch.zeros(1, dtype=torch.long, device=device)
    u = torch.rand(1, len(profile.space), device=device)
    with torch.no_grad():
        model(mosaic, cfa, u)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            model(mosaic, cfa, u)
        if device == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats * 1000


CARRIED = ("checkpoint.pt", "checkpoint.json")


def carry_in(run: Path, carry: Path) -> None:
    """Start a run folder from the carried checkpoint when it has none of its own (a fresh clone)."""
    if not (run / "checkpoint.pt").exists() and (carry / "checkpoint.pt").exists():
        run.mkdir(parents=True, exist_ok=True)
        for name in CARRIED:
            shutil.copyfile(carry / name, run / name)
        print(f"resuming from the carried checkpoint in {carry}", flush=True)


def progress(kind: str, run: Path, carry: Path | None):
    def show(record: dict) -> None:
        print(f"  {kind} epoch {record['epoch']}: unseen images {record['val_sources_psnr']:.2f} dB, "
              f"{record['samples_per_s']:.1f} samples/s, {record.get('structure')}", flush=True)  # fmt: skip
        if carry is not None:  # each epoch's checkpoint, so a run stopped anywhere continues from it
            carry.mkdir(parents=True, exist_ok=True)
            for name in CARRIED:
                shutil.copyfile(run / name, carry / f"{name}.tmp")
                (carry / f"{name}.tmp").replace(carry / name)

    return show


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--firmwares", nargs="+", default=["synthetic", "foreign"])
    ap.add_argument("--models", nargs="+", default=["greybox", "unet"])
    ap.add_argument("--epochs", type=int, help="override every model's stated epochs")
    ap.add_argument("--model-epochs", nargs="+", default=[], metavar="KIND=N", help="one kind's epochs")
    ap.add_argument("--no-denoise-cache", action="store_true", help="grey-box without its denoiser cache")
    ap.add_argument("--resume", action="store_true", help="continue each run from its last epoch's checkpoint")
    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="another schedule than the recipe's (own entry)")
    ap.add_argument("--carry-runs", action="store_true", help="keep each epoch's checkpoint under --carry")
    ap.add_argument("--carry", type=Path, default=ROOT / "benchmarks" / "results" / "carry")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy.json")
    args = ap.parse_args()
    model_epochs = {k: int(v) for k, v in (item.split("=", 1) for item in args.model_epochs)}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict = previous.get("models", {})
    configs: dict = previous.get("configs", {})
    out = {
        **header(
            "proxy",
            torch_version=torch.__version__,
            device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),
        "configs": configs,
        "models": results,
    }
    for firmware in args.firmwares:
        conf = config_for(firmware)
        data = capture(args.work, firmware, conf["sources"], conf["samples_per_source"], conf["patch"])
        n_samples = len(DatasetFolder(data).plan().rows)
        profile = DatasetFolder(data).plan().load_profile()
        for kind in args.models:
            uncached = args.no_denoise_cache and kind == "greybox"
            recipe = {**RECIPES[kind], **({"lr_schedule": args.lr_schedule} if args.lr_schedule else {})}
            other = recipe["lr_schedule"] != RECIPES[kind]["lr_schedule"]
            name = kind + ("-uncached" if uncached else "") + (f"-{recipe['lr_schedule']}" if other else "")
            run = args.work / f"run-{firmware}-{name}"
            carry = args.carry / f"{firmware}-{name}" if args.carry_runs else None
            if not args.resume:
                shutil.rmtree(run, ignore_errors=True)
            elif carry is not None:
                carry_in(run, carry)
            epochs = model_epochs.get(kind) or args.epochs or conf["epochs"][kind]
            cfg = TrainConfig(
                epochs=epochs, batch=8, seed=0, **recipe, **({"denoise_cache_mib": 0} if uncached else {})
            )
            t = time.perf_counter()
            final = train_proxy(
                data, run, profile, ProxyConfig(kind=kind), cfg, resume=args.resume, on_epoch=progress(kind, run, carry)
            )
            train_s = time.perf_counter() - t
            report = evaluate_proxy(run, data, run / "report", sensitivity_points=3, rank_sets=10)
            fid = report["fidelity"]
            results[f"{firmware}/{name}"] = {
                "date": out["date"],
                "samples": n_samples,
                "epochs": epochs,
                "recipe": recipe,
                "unseen_images_psnr": fid["unseen_images"]["psnr"],
                "unseen_settings_psnr": fid["unseen_settings"]["psnr"],
                "unseen_images_ssim_mean": fid["unseen_images"]["ssim"]["mean"],
                "spearman": report["rank_agreement"]["spearman_mean"],
                "weakest_parameters": sorted(
                    ((k, round(min(v["psnr"]), 2)) for k, v in report["sensitivity"].items()), key=lambda kv: kv[1]
                )[:4],
                "train_samples_per_s": round(
                    sum(h["samples_per_s"] for h in final["history"]) / len(final["history"]), 2
                ),
                "train_seconds": round(train_s, 1),
                "curve": [round(h["val_sources_psnr"], 2) for h in final["history"]],
                "structure": final["history"][-1].get("structure"),
                "probe": final.get("probe"),
                "proxy_structure": STRUCTURE[kind],  # which forward computed it (bumped on every change)
            }
            configs[firmware] = {**conf, "region": "plausible", "seed": 0, "batch": 8,
                                 "held_out_sources": final["split"]["held_out_sources"]}  # fmt: skip
            r = results[f"{firmware}/{name}"]
            print(f"{firmware:9} {name:7} unseen images {r['unseen_images_psnr']['mean']:.2f} dB, unseen settings "
                  f"{r['unseen_settings_psnr']['mean']:.2f} dB, Spearman {r['spearman']:.3f}, "
                  f"{r['train_samples_per_s']} samples/s", flush=True)  # fmt: skip
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # after every model: nothing lost
            shutil.copyfile(run / "curves.png", args.out.parent / f"proxy_curves_{firmware}_{name}.png")
    out["inference"] = {
        f"{kind}_{dev}_ms_per_512": round(inference_ms(kind, dev), 1) for kind in args.models for dev in devices
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["inference"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
