"""Proxy benchmark: both models on the same data, on the synthetic firmware and on `foreign`.

Fixed configuration (stated in the JSON): the six bundled photos, 24 Latin-hypercube samples each
over the synthetic profile's plausible region (noise reduction on), 64x64 patches, seed 0; a
split by source and by parameter set; E epochs of Adam (lr 1e-3, x0.9 every 10 epochs; the CLI's
default is the paper's RMSprop at 1e-4, which needs far more epochs than a CPU benchmark affords).
Reports held-out PSNR/SSIM, Spearman, training samples/s, and inference ms per 512x512 patch
(CPU, and CUDA when there is one). Writes benchmarks/results/proxy.json.
Usage: python benchmarks/proxy.py [--epochs E] [--work DIR]
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
from provenance import header

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.models.proxy import ProxyConfig, build_proxy
from hil_tune.profiles import load_profile
from hil_tune.train.proxy_eval import evaluate_proxy
from hil_tune.train.proxy_train import TrainConfig, train_proxy

ROOT = Path(__file__).resolve().parents[1]


def capture(work: Path, firmware: str, m: int, patch: int) -> Path:
    root = work / f"sweep-{firmware}"
    if (root / "plan.json").exists() and not list((root / "pending").glob("*.tar")):
        return root  # reuse a finished sweep of the same configuration
    shutil.rmtree(root, ignore_errors=True)
    profile = load_profile("synthetic")
    plan = build_plan(profile, resolve_sources(["bundled"]), samples_per_source=m, patch=patch, region="plausible")
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples-per-source", type=int, default=24)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy.json")
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict = {}
    for firmware in ("synthetic", "foreign"):
        data = capture(args.work, firmware, args.samples_per_source, args.patch)
        profile = DatasetFolder(data).plan().load_profile()
        for kind in ("greybox", "unet"):
            run = args.work / f"run-{firmware}-{kind}"
            shutil.rmtree(run, ignore_errors=True)
            cfg = TrainConfig(epochs=args.epochs, batch=8, optimizer="adam", lr=1e-3, seed=0)
            t = time.perf_counter()
            final = train_proxy(data, run, profile, ProxyConfig(kind=kind), cfg)
            train_s = time.perf_counter() - t
            report = evaluate_proxy(run, data, run / "report", sensitivity_points=3, rank_sets=10)
            fid = report["fidelity"]
            results[f"{firmware}/{kind}"] = {
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
            }
            r = results[f"{firmware}/{kind}"]
            print(f"{firmware:9} {kind:7} unseen images {r['unseen_images_psnr']['mean']:.2f} dB, unseen settings "
                  f"{r['unseen_settings_psnr']['mean']:.2f} dB, Spearman {r['spearman']:.3f}, "
                  f"{r['train_samples_per_s']} samples/s", flush=True)  # fmt: skip
    speed = {
        f"{kind}_{dev}_ms_per_512": round(inference_ms(kind, dev), 1) for kind in ("greybox", "unet") for dev in devices
    }
    out = {
        **header(
            "proxy",
            torch_version=torch.__version__,
            device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),
        "config": {
            "sources": "bundled (6)",
            "samples_per_source": args.samples_per_source,
            "patch": args.patch,
            "region": "plausible",
            "epochs": args.epochs,
            "optimizer": "adam lr 1e-3, x0.9/10 epochs",
            "batch": 8,
            "seed": 0,
            "model": ProxyConfig().as_dict(),
        },
        "models": results,
        "inference": speed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(speed))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
