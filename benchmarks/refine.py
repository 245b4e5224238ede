"""Active-loop benchmark: does resampling where the predictor goes, refining the proxy there and
retraining the predictor make the predictor better on photos it never saw, on the device?

Configuration (stated in the JSON), per firmware (`synthetic`, `foreign`), every render through the
`sim` driver running that firmware:
- the 16 photos in HIL_TUNE_PHOTO_DIR (default ../shared/data/photos) split by name, every other
  one held out; held-out crops: `--held-draws` camera draws (default 1) of each of the 8 held-out
  photos, `--size` px (64; a BM3D render through sim costs about 0.7 s even at 64 px, so every
  held-out table costs minutes: its budgets are kept small and stated);
- the first sweep: 2 draws of each training photo, 8 Latin-hypercube samples per draw, plausible
  region, 64 px; a grey-box proxy (its recipe, `--proxy-epochs`), whose split holds out a fifth of
  those photos; the predictor (reference task) through it on fresh crops of the remaining
  training photos (`--predictor-epochs`);
- `hil-tune refine` for `--rounds` rounds, K = `--k` samples per training image and round around
  its prediction (radius 0.1), the proxy fine-tuned `--round-proxy-epochs` and the predictor
  `--round-predictor-epochs` per round; the held-out table each round (expert: CMA-ES, found once;
  oracle: `--oracle-budget` queries per image from the best other row; ideal: the camera's inverse);
- a control: the round-0 predictor fine-tuned through the *unrefined* proxy for as many epochs as
  all rounds together, scored on the same images: what the extra epochs alone give.
Goals ([Active loop]): after at most 3 rounds, held-out predicted PSNR at least +1 dB over round 0,
and the proxy against the device at the predicted settings at least 35 dB (synthetic) / 30 dB
(foreign). Writes benchmarks/results/refine.json (and each refine folder's rounds.png).
Usage: python benchmarks/refine.py [--firmware synthetic --firmware foreign]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from provenance import header, photo_dir

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import photo_of, resolve_sources
from hil_tune.drivers.registry import create_driver
from hil_tune.models.predictor import PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.profiles import load_profile
from hil_tune.refine import Refine, RefineInputs, RefineSettings
from hil_tune.train.predictor_eval import evaluate_predictor
from hil_tune.train.predictor_train import PredictorTrainConfig, train_predictor
from hil_tune.train.proxy_train import RECIPES, TrainConfig, train_proxy
from hil_tune.train.renderers import DeviceRenderer

ROOT = Path(__file__).resolve().parents[1]
GOAL_PROXY_DB = {"synthetic": 35.0, "foreign": 30.0}


def split_photos(folder: Path) -> tuple[list[str], list[str]]:
    """(training, held-out) photo paths: sorted by name, every other one held out."""
    photos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))
    return photos[0::2], photos[1::2]


def starting_models(work: Path, firmware: str, train_photos: list[str], args: argparse.Namespace) -> dict:
    """The first sweep, proxy and predictor (reused when already there), with their seconds."""
    seconds = {}
    profile = load_profile("synthetic")
    data = work / "sweep"
    t0 = time.perf_counter()
    if not (data / "plan.json").exists():
        sources = resolve_sources([f"{p}@2" for p in train_photos])
        DatasetFolder(data).create(build_plan(profile, sources, samples_per_source=8, patch=64, region="plausible"))
    run_capture(data, CaptureSettings("sim", {"firmware": firmware}), workers=os.cpu_count() or 1)
    seconds["sweep"] = round(time.perf_counter() - t0, 1)
    proxy, predictor = work / "proxy", work / "predictor"
    t0 = time.perf_counter()
    if not (proxy / "model.pt").exists():
        shutil.rmtree(proxy, ignore_errors=True)
        cfg = TrainConfig(epochs=args.proxy_epochs, val_sources=0.2, **RECIPES["greybox"])
        train_proxy(data, proxy, profile, ProxyConfig(), cfg)
    seconds["proxy"] = round(time.perf_counter() - t0, 1)
    side = json.loads((proxy / "model.json").read_text())
    held = {photo_of(h) for h in side["split"]["held_out_sources"]}
    images = [s.id for s in resolve_sources(train_photos) if s.id not in held]
    t0 = time.perf_counter()
    if not (predictor / "model.pt").exists():
        shutil.rmtree(predictor, ignore_errors=True)
        pcfg = PredictorTrainConfig(epochs=args.predictor_epochs, crop=args.size, crops_per_image=4)
        train_predictor(data, proxy, "reference", predictor, PredictorConfig(), pcfg, images=images)
    seconds["predictor"] = round(time.perf_counter() - t0, 1)
    return {"proxy": proxy, "predictor": predictor, "images": images, "seconds": seconds,
            "proxy_held_out_psnr": side["metrics"].get("val_sources_psnr")}  # fmt: skip


def control(work: Path, firmware: str, start: dict, held: list[str], args: argparse.Namespace, refine: Path) -> dict:
    """The round-0 predictor, fine-tuned as long as all rounds together through the unrefined
    proxy, scored like the rounds (the same expert)."""
    run = work / "control"
    epochs = args.rounds * args.round_predictor_epochs
    t0 = time.perf_counter()
    if not (run / "model.pt").exists():
        shutil.rmtree(run, ignore_errors=True)
        side = json.loads((start["predictor"] / "model.json").read_text())
        pcfg = PredictorTrainConfig(**{**side["train"], "epochs": epochs, "seed": 1})
        train_predictor(Path(side["dataset"]["path"]), start["proxy"], "reference", run, PredictorConfig(), pcfg,
                        images=start["images"], init=start["predictor"])  # fmt: skip
    first = json.loads((refine / "round-0" / "eval" / "report.json").read_text())["expert"]
    profile = load_profile("synthetic")
    renderer = DeviceRenderer(create_driver("sim", profile, firmware=firmware))
    try:
        report = evaluate_predictor(run, held, run / "report", size=args.size, oracle_budget=args.oracle_budget,
                                    renderer=renderer, refine_queries=(),
                                    expert=(first["params"], first["objective"]))  # fmt: skip
    finally:
        renderer.close()
    return {"epochs": epochs, "held_out": report["summary"], "seconds": round(time.perf_counter() - t0, 1)}


def bench(firmware: str, args: argparse.Namespace, photos: Path) -> dict:
    work = args.work / firmware
    train_photos, held_photos = split_photos(photos)
    held = [f"{p}@{args.held_draws}" for p in held_photos]
    start = starting_models(work, firmware, train_photos, args)
    settings = RefineSettings(
        rounds=args.rounds, samples_per_image=args.k, patch=64, proxy_epochs=args.round_proxy_epochs,
        predictor_epochs=args.round_predictor_epochs, eval_size=args.size, expert_budget=args.expert_budget,
        oracle_budget=args.oracle_budget,
    )  # fmt: skip
    inputs = RefineInputs(start["proxy"], start["predictor"], "sim", {"firmware": firmware}, [], held)
    t0 = time.perf_counter()
    refine = work / "refine"
    Refine(refine, inputs, settings, resume=True, on_step=lambda s: print(f"  {firmware} {s}", flush=True)).run()
    rounds = json.loads((refine / "rounds.json").read_text())
    seconds = {**start["seconds"], "refine": round(time.perf_counter() - t0, 1)}
    ctrl = control(work, firmware, start, held, args, refine)
    last, first = rounds["rounds"][-1], rounds["rounds"][0]
    summary = {
        "predicted_psnr_by_round": [r["held_out"]["predicted"]["psnr"] for r in rounds["rounds"]],
        "predicted_psnr_gain_db": rounds["predicted_psnr_gain_db"],
        "control_gain_db": ctrl["held_out"]["predicted"]["psnr"] - first["held_out"]["predicted"]["psnr"],
        "proxy_vs_device_at_predicted_by_round": [
            r["proxy_vs_device_at_predicted_db"]["mean"] for r in rounds["rounds"]
        ],
        "device_queries": last["device_queries"]["cumulative"],
        "goal_gain_met": rounds["predicted_psnr_gain_db"] >= 1.0,
        "goal_proxy_met": last["proxy_vs_device_at_predicted_db"]["mean"] >= GOAL_PROXY_DB[firmware],
    }  # fmt: skip
    return {"summary": summary, "rounds": rounds["rounds"], "control": ctrl, "seconds": seconds,
            "proxy_held_out_psnr": start["proxy_held_out_psnr"], "refine_folder": str(refine)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "refine")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refine.json")
    ap.add_argument("--firmware", action="append", choices=["synthetic", "foreign"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--proxy-epochs", type=int, default=20)
    ap.add_argument("--predictor-epochs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--round-proxy-epochs", type=int, default=5)
    ap.add_argument("--round-predictor-epochs", type=int, default=8)
    ap.add_argument("--held-draws", type=int, default=1, help="camera draws of each held-out photo")
    ap.add_argument("--expert-budget", type=int, default=24)
    ap.add_argument("--oracle-budget", type=int, default=8)
    args = ap.parse_args()
    photos = photo_dir()
    if photos is None:
        print("needs the training photos: set HIL_TUNE_PHOTO_DIR (or put them in ../shared/data/photos)")
        return 2
    results = {}
    for fw in args.firmware or ["synthetic", "foreign"]:
        results[fw] = bench(fw, args, photos)
    config = {k: v for k, v in vars(args).items() if k not in ("work", "out")}
    body = {**header("refine", torch_version=torch.__version__), "config": config, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(body, indent=2, default=str))
    print(f"{'firmware':10} {'predicted dB by round':32} {'gain':>6} {'control':>8} "
          f"{'proxy@pred dB by round':30} queries")  # fmt: skip
    for fw, r in results.items():
        s = r["summary"]
        by_round = " ".join(f"{v:.2f}" for v in s["predicted_psnr_by_round"])
        fid = " ".join(f"{v:.2f}" for v in s["proxy_vs_device_at_predicted_by_round"])
        print(f"{fw:10} {by_round:32} {s['predicted_psnr_gain_db']:+6.2f} {s['control_gain_db']:+8.2f} {fid:30} "
              f"{s['device_queries']}")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
