"""Predictor benchmark at scale: the evaluation table (default / expert / predicted / predicted+K /
ideal / oracle on the real ISP) on photos neither model saw, and predictor inference time at a
256x256 preview on CPU.

Configuration (stated in the JSON): the 16 photos in HIL_TUNE_PHOTO_DIR (default ../shared/data/
photos) split by name, every other one held out (8 photos, 3 camera draws each: 24 crops of
`--size` px, default 128) and the other 8 plus the six bundled photos for training. The proxy's
sweep: `--draws` unprocessing draws of each training photo, 8 Latin-hypercube samples per draw,
plausible region, 64 px patches; a grey-box proxy (Adam, its recipe) whose split holds out a fifth
of those photos. The predictor (reference task) trains through it on fresh 128 px crops and camera
draws of the remaining training photos each epoch (`train predictor --images`). Expert: CMA-ES,
200 evaluations over 8 training images; oracle: 64 per image from the best of all other rows;
ideal: each draw's exact inverse with a 3 x 3 denoise search; predicted+4 / +10: per-image tuning
from the prediction (the [Device eval] goal: predicted+10 within 0.5 dB PSNR of the oracle).
Renders are cached by (image, setting) under the work folder, so `--reuse` recomputes the table
without retraining or re-rendering. Also measured: the proxy's own loss at the predicted settings
against the ISP's (does the predictor exploit the proxy?). Seconds per part are recorded.
Writes benchmarks/results/predictor.json. Usage: python benchmarks/predictor.py [--reuse] [--train-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from provenance import header, photo_dir

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import photo_of, resolve_sources
from hil_tune.models.predictor import AttentionPredictor, PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.profiles import load_profile
from hil_tune.raw import CFA_PATTERNS
from hil_tune.train.predictor_eval import evaluate_predictor, reference_frame, score
from hil_tune.train.predictor_train import PredictorTrainConfig, train_predictor
from hil_tune.train.proxy_train import RECIPES, TrainConfig, load_proxy, train_proxy
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer

ROOT = Path(__file__).resolve().parents[1]
ORACLE_BUDGET = 64
EXPERT_BUDGET = 200
EXPERT_IMAGES = 8
HELD_DRAWS = 3


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


def split_photos(folder: Path) -> tuple[list[str], list[str]]:
    """(training, held-out) photo paths: sorted by name, every other one held out."""
    photos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))
    return photos[0::2], photos[1::2]


def proxy_at_predicted(report: dict, proxy_run: Path, profile, firmware: str, size: int, cache: Path) -> dict:
    """The proxy's loss at the predicted settings against the ISP's there, and the proxy's PSNR
    against the ISP's output: a predictor that exploits the proxy shows a proxy loss well below
    the ISP's at its own choices."""
    proxy, _ = load_proxy(proxy_run)
    isp = CachedRenderer(BuiltinRenderer(profile, firmware, 1), cache)
    rows = []
    try:
        for r in report["per_image"]:
            frame, ref = reference_frame(r["image"], profile, size)
            out = isp.render([(frame, r["predicted_params"])])[0]
            u = torch.from_numpy(profile.space.encode(r["predicted_params"])).float()[None]
            mosaic = torch.from_numpy(frame.normalized()[None, None])
            with torch.no_grad():
                y = proxy(mosaic, torch.tensor([CFA_PATTERNS.index(frame.cfa)]), u)[0]
            y8 = np.round(np.clip(y.permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)
            mse = np.mean((y8.astype(np.float64) - out.astype(np.float64)) ** 2) / 255**2
            psnr = float(10 * np.log10(1 / max(mse, 1e-10)))
            rows.append({"image": r["image"], "isp_loss": score(out, ref)["loss"],
                         "proxy_loss": score(y8, ref)["loss"], "proxy_vs_isp_psnr": psnr})  # fmt: skip
    finally:
        isp.close()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("isp_loss", "proxy_loss", "proxy_vs_isp_psnr")}
    return {"mean": mean, "per_image": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "predictor-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--draws", type=int, default=3, help="unprocessing draws (cameras) per training photo in the sweep")
    ap.add_argument("--size", type=int, default=128, help="crop side for predictor training and evaluation")
    ap.add_argument("--crops-per-image", type=int, default=4)
    ap.add_argument("--proxy-epochs", type=int, default=8)
    ap.add_argument("--expert-budget", type=int, default=EXPERT_BUDGET)
    ap.add_argument("--oracle-budget", type=int, default=ORACLE_BUDGET)
    ap.add_argument(
        "--reuse", action="store_true", help="reuse the models the last run trained with this configuration"
    )
    ap.add_argument("--train-only", action="store_true", help="stop once the models are trained (for predictor_gap.py)")
    args = ap.parse_args()
    photos = photo_dir()
    if photos is None:
        print("needs the training photos: set HIL_TUNE_PHOTO_DIR (or put them in ../shared/data/photos)")
        return 2
    train_photos, held_photos = split_photos(photos)
    speed = inference_ms()
    print(f"predictor inference at 256x256, one thread: p50 {speed['p50']:.2f} ms, p99 {speed['p99']:.2f} ms")
    seconds: dict[str, float] = {}
    workers = os.cpu_count() or 1
    data = args.work / f"sweep-draws{args.draws}"
    t0 = time.perf_counter()
    if not (data / "plan.json").exists():
        sources = resolve_sources([f"{p}@{args.draws}" for p in train_photos] + [f"bundled@{args.draws}"])
        plan = build_plan(load_profile("synthetic"), sources, samples_per_source=8, patch=64, region="plausible")
        DatasetFolder(data).create(plan)
    run_capture(data, CaptureSettings("sim"), workers=workers)  # resumes; nothing to do when complete
    seconds["sweep"] = round(time.perf_counter() - t0, 1)
    profile = DatasetFolder(data).plan().load_profile()
    proxy = args.work / "proxy"
    run = args.work / "predictor"
    # Each model is reused when the last run trained it with the same configuration (its sidecar
    # says how many epochs); otherwise trained afresh. A proxy checkpoint cut short is finished
    # where it stopped only when asked to (--proxy-epochs at most its epochs), never silently.
    t0 = time.perf_counter()
    proxy_side = _sidecar(proxy / "model.json") or _sidecar(proxy / "checkpoint.json")
    fresh = not (args.reuse and proxy_side and proxy_side["epoch"] + 1 >= args.proxy_epochs)
    if fresh:
        shutil.rmtree(proxy, ignore_errors=True)
        cfg = TrainConfig(epochs=args.proxy_epochs, val_sources=0.2, **RECIPES["greybox"])
        proxy_side = train_proxy(data, proxy, profile, ProxyConfig(), cfg)
    elif not (proxy / "model.json").exists():
        cfg = TrainConfig(epochs=proxy_side["epoch"] + 1, val_sources=0.2, **RECIPES["greybox"])
        proxy_side = train_proxy(data, proxy, profile, ProxyConfig(), cfg, resume=True)
    seconds["proxy"] = round(time.perf_counter() - t0, 1)
    proxy_held = {photo_of(h) for h in proxy_side["split"]["held_out_sources"]}
    predictor_photos = [s.id for s in resolve_sources([*train_photos, "bundled"]) if s.id not in proxy_held]
    t0 = time.perf_counter()
    run_side = _sidecar(run / "model.json")
    pcfg = PredictorTrainConfig(epochs=args.epochs, crop=args.size, crops_per_image=args.crops_per_image)
    same_train = run_side and asdict(PredictorTrainConfig(**run_side["train"])) == asdict(pcfg)
    same = same_train and run_side["model"] == PredictorConfig().as_dict()
    if fresh or not (args.reuse and same and len(run_side["history"]) == args.epochs):
        shutil.rmtree(run, ignore_errors=True)
        run_side = train_predictor(data, proxy, "reference", run, PredictorConfig(), pcfg, images=predictor_photos)
    seconds["predictor"] = round(time.perf_counter() - t0, 1)
    train_s = sum(h["seconds"] for h in run_side["history"])
    if args.train_only:
        print(f"trained in {seconds}; held-out predictor loss {run_side['history'][-1]}")
        return 0
    held = [f"{p}@{HELD_DRAWS}" for p in held_photos]
    cache = args.work / "render-cache"
    t0 = time.perf_counter()
    report = evaluate_predictor(
        run,
        held,
        run / "report",
        size=args.size,
        expert_budget=args.expert_budget,
        oracle_budget=args.oracle_budget,
        train_images=EXPERT_IMAGES,
        workers=workers,
        cache=cache,
    )
    seconds["evaluation"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    exploit = proxy_at_predicted(report, proxy, profile, "synthetic", args.size, cache)
    seconds["proxy_at_predicted"] = round(time.perf_counter() - t0, 1)
    out = {
        **header("predictor", torch_version=torch.__version__),
        "config": {
            "dataset": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data),
            "sweep": f"{len(train_photos)} photos + 6 bundled, {args.draws} draws each, 8 samples per draw, 64 px",
            "proxy": f"greybox, {proxy_side['epoch'] + 1} epochs, {RECIPES['greybox']}",
            "proxy_held_out_sources": sorted(proxy_held),
            "proxy_held_out_psnr": proxy_side["history"][proxy_side["epoch"]]["val_sources_psnr"],
            "proxy_structure": proxy_side["history"][proxy_side["epoch"]].get("structure"),
            "predictor_epochs": args.epochs,
            "predictor_images": [Path(p).name for p in predictor_photos],
            "predictor_crop": args.size,
            "predictor_crops_per_image": args.crops_per_image,
            "predictor_weights": speed["weights"],
            "held_out_photos": [Path(p).name for p in held_photos],
            "held_out_images": len(report["per_image"]),
            "crop": args.size,
            "expert_budget": args.expert_budget,
            "expert_train_images": report["expert"]["train_images"],
            "oracle_budget": args.oracle_budget,
            "refine_queries": list(report["refine"]["queries_per_image"]),
            "ideal": report["ideal"],
            "optimiser": report["optimiser"],
            "seed": 0,
        },
        "table": report["summary"],
        "margins_db": report["margins_db"],
        "queries": report["queries"],
        "isp_renders": report["isp_renders"],
        "wins_over_expert_by_loss": report["wins_over_expert_by_loss"],
        "device_eval_goal": {
            "what": "predicted+10 within 0.5 dB PSNR of the oracle",
            "oracle_minus_predicted+10_db": report["margins_db"]["oracle_minus_predicted+10"],
            "met": report["margins_db"]["oracle_minus_predicted+10"] <= 0.5,
        },
        "proxy_at_predicted": exploit,
        "per_image": report["per_image"],
        "predictor_train_seconds": round(train_s, 1),
        "seconds": seconds,
        "inference_256_cpu_ms": speed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for m, s in report["summary"].items():
        print(f"{m:13} PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.3f}  loss {s['loss']:.4f}")
    e = exploit["mean"]
    print(f"at the predicted settings: ISP loss {e['isp_loss']:.4f}, proxy loss {e['proxy_loss']:.4f}, "
          f"proxy vs ISP {e['proxy_vs_isp_psnr']:.2f} dB")  # fmt: skip
    print(f"seconds: {seconds}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
