"""Per-image tuning from the prediction, with and without the descent through the proxy, on the
held-out crops of the last `benchmarks/predictor.py` run.

Rows per image, every render on the real ISP: predicted; predicted+K for K = 1, 4, 10 device
queries with the proxy stage (`hil_tune.train.proxy_descent`: 20 Adam steps through the run's
frozen proxy from the prediction, rendered once, then the (1+1)-ES), and the same K without it
(the ES alone, as before). The oracle (64 queries per image) and ideal rows are read from
benchmarks/results/predictor.json, measured on the same crops; the predicted row is checked
against that file's (`predicted_check_db`), since the models may have been retrained with
`predictor.py --train-only`. Renders are cached under the work folder.
Writes benchmarks/results/predictor_refine.json. Usage: python benchmarks/predictor_refine.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from provenance import header

from hil_tune.train.predictor_eval import predict_params, reference_frame, refine, run_firmware, score
from hil_tune.train.predictor_train import load_predictor
from hil_tune.train.proxy_descent import PROXY_STEPS, proxy_stage
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer

ROOT = Path(__file__).resolve().parents[1]
QUERIES = (1, 4, 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "predictor-scale")
    ap.add_argument("--bench", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predictor_refine.json")
    ap.add_argument("--proxy-steps", type=int, default=PROXY_STEPS)
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    run = args.work / "predictor"
    model, side, profile = load_predictor(run)
    stage = proxy_stage(side, profile, args.proxy_steps, args.work / "proxy")
    assert stage is not None
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    size = bench["config"]["crop"]
    isp = CachedRenderer(BuiltinRenderer(profile, run_firmware(side), os.cpu_count() or 1), args.work / "render-cache")
    rows, descent_s = [], []
    try:
        for r in bench["per_image"]:
            frame, ref = reference_frame(r["image"], profile, size)
            predicted = predict_params(model, profile, frame)
            start = score(isp.render([(frame, predicted)])[0], ref)
            row = {"image": r["image"], "predicted": start, "oracle": r["oracle"], "ideal": r["ideal"],
                   "predicted_check_db": abs(start["psnr"] - r["predicted"]["psnr"])}  # fmt: skip
            for k in QUERIES:
                for name, use in ((f"proxy+{k}", stage), (f"es+{k}", None)):
                    t0 = time.perf_counter()
                    _, _, _, out = refine(isp, profile, frame, ref, predicted, lower, upper, k, 0,
                                          start_loss=start["loss"], stage=use)  # fmt: skip
                    if use is not None and k == QUERIES[0]:
                        descent_s.append(time.perf_counter() - t0)
                    row[name] = start if out is None else score(out, ref)
            rows.append(row)
            print(f"{r['image'][-16:]:16} predicted {start['psnr']:6.2f}  proxy+1 {row['proxy+1']['psnr']:6.2f}  "
                  f"proxy+10 {row['proxy+10']['psnr']:6.2f}  es+10 {row['es+10']['psnr']:6.2f}  "
                  f"oracle {r['oracle']['psnr']:6.2f}", flush=True)  # fmt: skip
    finally:
        isp.close()
    keys = ["predicted", *(f"{m}+{k}" for m in ("proxy", "es") for k in QUERIES), "ideal", "oracle"]
    mean = {k: {m: float(np.mean([row[k][m] for row in rows])) for m in ("psnr", "ssim", "loss")} for k in keys}
    out = {
        **header("predictor_refine"),
        "bench": str(args.bench.relative_to(ROOT)) if args.bench.is_relative_to(ROOT) else str(args.bench),
        "images": len(rows),
        "size": size,
        "proxy_stage": stage.describe(),
        "es": "(1+1)-ES with the one-fifth rule, step 0.08 of the region, seed 0",
        "oracle": f"from {args.bench.name}: CMA-ES, {bench['config']['oracle_budget']} queries per image",
        "mean": mean,
        "oracle_minus": {k: mean["oracle"]["psnr"] - mean[k]["psnr"] for k in keys if k != "oracle"},
        "device_eval_goal": {
            "what": "predicted+10 (with the proxy stage) within 0.5 dB PSNR of the oracle",
            "oracle_minus_predicted+10_db": mean["oracle"]["psnr"] - mean["proxy+10"]["psnr"],
            "met": mean["oracle"]["psnr"] - mean["proxy+10"]["psnr"] <= 0.5,
        },
        "wins_over_oracle_by_loss": {k: int(sum(r[k]["loss"] <= r["oracle"]["loss"] for r in rows)) for k in keys},
        "predicted_check_db": max(r["predicted_check_db"] for r in rows),
        "descent_seconds_per_image": float(np.mean(descent_s)),
        "isp_renders": isp.renders,
        "per_image": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'row':12} {'PSNR':>7} {'SSIM':>6} {'loss':>7}")
    for k in keys:
        print(f"{k:12} {mean[k]['psnr']:7.2f} {mean[k]['ssim']:6.3f} {mean[k]['loss']:7.4f}")
    print(f"descent {out['descent_seconds_per_image']:.1f} s per image; {isp.renders} new renders; "
          f"predicted row within {out['predicted_check_db']:.2f} dB of the benchmark's per image")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
