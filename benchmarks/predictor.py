"""Predictor benchmark: the evaluation table (default / expert / predicted / oracle on the real ISP)
for a fixed small configuration, and predictor inference time at a 256x256 preview on CPU.

Configuration (stated in the JSON): a sweep of the six bundled photos, each unprocessed `--draws`
times (each draw another camera: white balance, colour matrix, noise), 8 samples per draw, plausible
region, 64x64 patches; a grey-box proxy (30 epochs, Adam) whose split holds out two photos with all
their draws; the predictor (40 epochs, reference task) on the other four; evaluation on the first
`--held-draws` draws of the two held-out photos, CMA-ES budgets 48 (expert, 8 training images: two
draws of each training photo) and 64 (oracle, per image); per-image tuning from the prediction with
4 and 10 device queries (predicted+4, predicted+10; the [Device eval] goal: predicted+10 within
0.5 dB PSNR of the oracle); the ideal row (each draw's exact inverse, 3 x 3 denoise search).
Writes benchmarks/results/predictor.json. Usage: python benchmarks/predictor.py
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
from hil_tune.capture.sources import resolve_sources, source_from_id
from hil_tune.models.predictor import AttentionPredictor, PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.profiles import load_profile
from hil_tune.train.predictor_eval import evaluate_predictor
from hil_tune.train.predictor_train import PredictorTrainConfig, train_predictor
from hil_tune.train.proxy_train import RECIPES, TrainConfig, train_proxy

ROOT = Path(__file__).resolve().parents[1]
ORACLE_BUDGET = 64


def inference_ms(repeats: int = 200) -> dict[str, float]:
    torch.set_num_threads(1)
    model = AttentionPredictor(20, [0.0] * 20, [1.0] * 20, PredictorConfig()).eval()
    x = torch.rand(1, 4, 128, 128)  # a 256x256 RAW preview, packed
    times = []
    with torch.no_grad():
        for _ in range(20):
            model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99) - 1],
        "weights": sum(p.numel() for p in model.parameters()),
    }


def _sidecar(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--draws", type=int, default=6, help="unprocessing draws (cameras) per photo")
    ap.add_argument("--held-draws", type=int, default=3, help="draws of each held-out photo to evaluate")
    ap.add_argument("--proxy-epochs", type=int, default=30)
    ap.add_argument(
        "--reuse", action="store_true", help="reuse the models the last run trained with this configuration"
    )
    args = ap.parse_args()
    speed = inference_ms()
    print(f"predictor inference at 256x256, one thread: p50 {speed['p50']:.2f} ms, p99 {speed['p99']:.2f} ms")
    data = args.work / f"sweep-draws{args.draws}"
    if not (data / "plan.json").exists():
        sources = resolve_sources([f"bundled@{args.draws}"])
        plan = build_plan(load_profile("synthetic"), sources, samples_per_source=8, patch=64, region="plausible")
        DatasetFolder(data).create(plan)
    run_capture(data, CaptureSettings("sim"), workers=os.cpu_count() or 1)  # resumes; nothing to do when complete
    profile = DatasetFolder(data).plan().load_profile()
    proxy = args.work / "pred-bench-proxy"
    run = args.work / "pred-bench-predictor"
    # Each model is reused when the last run trained it with the same configuration (its sidecar
    # says how many epochs); otherwise trained afresh. A proxy checkpoint cut short is finished
    # where it stopped only when asked to (--proxy-epochs at most its epochs), never silently.
    proxy_side = _sidecar(proxy / "model.json") or _sidecar(proxy / "checkpoint.json")
    if not (args.reuse and proxy_side and proxy_side["epoch"] + 1 >= args.proxy_epochs):
        shutil.rmtree(proxy, ignore_errors=True)
        cfg = TrainConfig(epochs=args.proxy_epochs, val_sources=0.34, **RECIPES["greybox"])
        proxy_side = train_proxy(data, proxy, profile, ProxyConfig(), cfg)
    elif not (proxy / "model.json").exists():
        cfg = TrainConfig(epochs=proxy_side["epoch"] + 1, val_sources=0.34, **RECIPES["greybox"])
        proxy_side = train_proxy(data, proxy, profile, ProxyConfig(), cfg, resume=True)
    held_all = proxy_side["split"]["held_out_sources"]
    run_side = _sidecar(run / "model.json")
    if not (args.reuse and run_side and len(run_side["history"]) == args.epochs):
        shutil.rmtree(run, ignore_errors=True)
        run_side = train_predictor(data, proxy, "reference", run, PredictorConfig(),
                                   PredictorTrainConfig(epochs=args.epochs))  # fmt: skip
    train_s = sum(h["seconds"] for h in run_side["history"])
    held = [i for i in held_all if source_from_id(i).draw < args.held_draws]
    report = evaluate_predictor(
        run,
        held,
        run / "report",
        size=64,
        expert_budget=48,
        oracle_budget=ORACLE_BUDGET,
        train_images=8,
        workers=os.cpu_count() or 1,
    )
    out = {
        **header("predictor", torch_version=torch.__version__),
        "config": {
            "dataset": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data),
            "proxy": f"greybox, {proxy_side['epoch'] + 1} epochs, {RECIPES['greybox']}",
            "proxy_held_out_psnr": proxy_side["history"][proxy_side["epoch"]]["val_sources_psnr"],
            "proxy_structure": proxy_side["history"][proxy_side["epoch"]].get("structure"),
            "predictor_epochs": args.epochs,
            "held_out_images": held,
            "crop": 64,
            "expert_budget": 48,
            "expert_train_images": 8,
            "draws_per_photo": args.draws,
            "oracle_budget": ORACLE_BUDGET,
            "refine_queries": list(report["refine"]["queries_per_image"]),
            "optimiser": report["optimiser"],
            "seed": 0,
        },
        "table": report["summary"],
        "margins_db": report["margins_db"],
        "queries": report["queries"],
        "wins_over_expert_by_loss": report["wins_over_expert_by_loss"],
        "device_eval_goal": {
            "what": "predicted+10 within 0.5 dB PSNR of the oracle",
            "oracle_minus_predicted+10_db": report["margins_db"]["oracle_minus_predicted+10"],
            "met": report["margins_db"]["oracle_minus_predicted+10"] <= 0.5,
        },
        "per_image": [{k: v for k, v in r.items() if k != "predicted_params"} for r in report["per_image"]],
        "predictor_train_seconds": round(train_s, 1),
        "inference_256_cpu_ms": speed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for m, s in report["summary"].items():
        print(f"{m:10} PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.3f}  loss {s['loss']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
