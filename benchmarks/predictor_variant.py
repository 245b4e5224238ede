"""One change to the predictor, measured on the held-out crops of `benchmarks/predictor.py`.

Trains a predictor like the benchmark's (same sweep, proxy, training photos, crop and seed) with
one setting changed (`--dim`: width of the attention, i.e. capacity; `--epochs`; `--lr`;
`--lr-schedule`; `--stats` / `--no-stats`: the frame's global statistics; `--ema`: a moving
average of the weights; `--held-out-crops`: the set that picks the kept epoch),
and scores its predicted row on the real ISP on the same 24 crops, beside the benchmark's
predictor retrained with its own settings (the work folder's `predictor`). A hypothesis test for docs/predictor.md,
not a tuning run: the held-out photos are only scored, never trained on.
Writes benchmarks/results/predictor_variant_<name>.json.
Usage: python benchmarks/predictor_variant.py --dim 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from predictor import split_photos
from provenance import header, photo_dir

from hil_tune.capture.sources import photo_of, resolve_sources
from hil_tune.models.predictor import PredictorConfig
from hil_tune.train.predictor_eval import predict_params, reference_frame, run_firmware, score
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer

ROOT = Path(__file__).resolve().parents[1]


def predicted_rows(run: Path, bench: dict, isp: CachedRenderer, profile) -> list[dict]:
    model, _, _ = load_predictor(run)
    size, rows = bench["config"]["crop"], []
    for r in bench["per_image"]:
        frame, ref = reference_frame(r["image"], profile, size)
        out = isp.render([(frame, predict_params(model, profile, frame))])[0]
        rows.append({"image": r["image"], **score(out, ref)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "predictor-scale")
    ap.add_argument("--bench", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="Adam's rate (default: the benchmark predictor's)")
    ap.add_argument("--lr-schedule", default="constant", help="constant or cosine")
    ap.add_argument("--stats", action=argparse.BooleanOptionalAction, default=None,
                    help="the global statistics (default: as the benchmark predictor)")  # fmt: skip
    ap.add_argument("--ema", type=float, default=None, help="per-step weight-average decay (default: as base)")
    ap.add_argument("--held-out-crops", type=int, default=None, help="selection crops per held-out photo")
    ap.add_argument("--seed", type=int, default=None, help="another seed, same settings: run-to-run spread")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    name = f"dim{args.dim}-epochs{args.epochs}" + ("" if args.lr_schedule == "constant" else f"-{args.lr_schedule}")
    name += ("" if args.lr is None else f"-lr{args.lr:g}") + {None: "", True: "-stats", False: "-nostats"}[args.stats]
    name += "" if args.ema is None else f"-ema{args.ema:g}"
    name += "" if args.held_out_crops is None else f"-heldcrops{args.held_out_crops}"
    name += "" if args.seed is None else f"-seed{args.seed}"
    photos = photo_dir()
    if photos is None:
        print("needs the training photos: set HIL_TUNE_PHOTO_DIR (or put them in ../shared/data/photos)")
        return 2
    train_photos, _ = split_photos(photos)
    data, proxy, base = args.work / "sweep-draws3", args.work / "proxy", args.work / "predictor"
    _, base_side, profile = load_predictor(base)
    proxy_held = {photo_of(h) for h in base_side["dataset"]["held_out_sources"]}
    images = [s.id for s in resolve_sources([*train_photos, "bundled"]) if s.id not in proxy_held]
    run = args.work / f"predictor-{name}"
    shutil.rmtree(run, ignore_errors=True)
    lr = base_side["train"]["lr"] if args.lr is None else args.lr
    change = {"epochs": args.epochs, "lr": lr, "lr_schedule": args.lr_schedule}
    optional = (("ema", args.ema), ("held_out_crops", args.held_out_crops), ("seed", args.seed))
    change.update({k: v for k, v in optional if v is not None})
    base_train = PredictorTrainConfig(**base_side["train"])  # older runs: the defaults they ran with
    cfg = replace(base_train, **change)
    model_cfg = PredictorConfig.from_dict({**base_side["model"], "dim": args.dim})
    model_cfg = model_cfg if args.stats is None else replace(model_cfg, stats=args.stats)
    t0 = time.perf_counter()
    side = train_predictor(data, proxy, "reference", run, model_cfg, cfg, images=images)
    train_s = time.perf_counter() - t0
    isp = CachedRenderer(BuiltinRenderer(profile, run_firmware(side), os.cpu_count() or 1), args.work / "render-cache")
    try:
        variant, baseline = predicted_rows(run, bench, isp, profile), predicted_rows(base, bench, isp, profile)
    finally:
        isp.close()
    weights = sum(v.numel() for v in load_predictor(run)[0].parameters())
    mean = {k: {m: float(np.mean([r[m] for r in rows])) for m in ("psnr", "ssim", "loss")}
            for k, rows in (("variant", variant), ("baseline", baseline))}  # fmt: skip
    out = {
        **header(f"predictor_variant_{name}"),
        "change": {"dim": args.dim, "stats": model_cfg.stats, **change},
        "baseline": {
            "dim": base_side["model"]["dim"],
            "epochs": base_train.epochs,
            "lr": base_train.lr,
            "lr_schedule": base_train.lr_schedule,
            "stats": PredictorConfig.from_dict(base_side["model"]).stats,
            "ema": base_train.ema,
            "held_out_crops": base_train.held_out_crops,
        },
        "weights": weights,
        "images": len(variant),
        "mean": mean,
        "variant_minus_baseline_db": mean["variant"]["psnr"] - mean["baseline"]["psnr"],
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "held_out_loss", "lr")} for h in side["history"]],
        "kept_epoch": side["epoch"],
        "held_out": side["dataset"].get("held_out"),
        "train_seconds": round(train_s, 1),
        "per_image": [{"variant": a, "baseline": b} for a, b in zip(variant, baseline, strict=True)],
    }
    path = ROOT / "benchmarks" / "results" / f"predictor_variant_{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for k, s in mean.items():
        print(f"{k:9} PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.3f}  loss {s['loss']:.4f}")
    print(f"{weights} weights, trained in {train_s:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
