"""Where the predictor loses to the camera's own inverse: the ideal - predicted gap split by block.

For every held-out image of the last `benchmarks/predictor.py` run, two swaps per parameter group
of the profile (noise reduction, white balance, colour matrix, sharpening), each rendered on the
real ISP: the predicted setting with that group taken from the ideal setting ("fix g"), and the
ideal setting with that group taken from the prediction ("break g"). A group whose fix gains much
and whose break costs much is where the predictor is wrong. Renders go through the benchmark's
render cache, so only the swaps cost anything.

The images are those of benchmarks/results/predictor.json. The predictions are the run's own
(its report) when the evaluation ran; after `predictor.py --train-only` they are made here, and
the predicted row is checked against the benchmark's (`predicted_check_db`: the largest per-image
PSNR difference; 0 when the retrained predictor is the one the table measured).
Writes benchmarks/results/predictor_gap.json. Usage: python benchmarks/predictor_gap.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from provenance import header

from hil_tune.train.predictor_eval import best_ideal, predict_params, reference_frame, run_firmware, score
from hil_tune.train.predictor_train import load_predictor
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer

ROOT = Path(__file__).resolve().parents[1]
# Groups that compensate each other are also swapped together: a colour matrix predicted for its
# own white balance is wrong for the ideal one, so swapping either alone measures the coupling.
COUPLED = {"colour": ("white-balance", "color-space-transform")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "predictor-scale")
    ap.add_argument("--bench", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predictor_gap.json")
    args = ap.parse_args()
    run = args.work / "predictor"
    bench = json.loads(args.bench.read_text())
    report_path = run / "report" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    own = {r["image"]: r["predicted_params"] for r in report["per_image"]} if report else {}
    model, side, profile = load_predictor(run)
    model.eval()
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    size = bench["config"]["crop"]
    groups: dict[str, list[str]] = {}
    for spec in profile.space:
        groups.setdefault(spec.group, []).append(spec.name)
    for name, parts in COUPLED.items():
        if all(g in groups for g in parts):
            groups[name] = [k for g in parts for k in groups[g]]
    isp = CachedRenderer(BuiltinRenderer(profile, run_firmware(side), os.cpu_count() or 1), args.work / "render-cache")
    rows = []
    try:
        for r in bench["per_image"]:
            frame, ref = reference_frame(r["image"], profile, size)
            ideal = best_ideal(isp, profile, frame, ref, lower, upper)[0]  # type: ignore[index]
            predicted = own.get(r["image"]) or predict_params(model, profile, frame)
            variants = {"predicted": predicted, "ideal": ideal}
            for g, names in groups.items():
                variants[f"fix {g}"] = {**predicted, **{k: ideal[k] for k in names}}
                variants[f"break {g}"] = {**ideal, **{k: predicted[k] for k in names}}
            renders = isp.render([(frame, v) for v in variants.values()])
            scores = {k: score(o, ref) for k, o in zip(variants, renders, strict=True)}
            check = abs(scores["predicted"]["psnr"] - r["predicted"]["psnr"])
            rows.append({"image": r["image"], **scores, "predicted_check_db": check, "predicted_params": predicted})
    finally:
        isp.close()
    keys = [k for k in rows[0] if k not in ("image", "predicted_check_db", "predicted_params")]
    mean = {k: {m: float(np.mean([row[k][m] for row in rows])) for m in ("psnr", "ssim", "loss")} for k in keys}
    base, top = mean["predicted"]["psnr"], mean["ideal"]["psnr"]
    out = {
        **header("predictor_gap"),
        "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
        "images": len(rows),
        "size": size,
        "groups": groups,
        "mean": mean,
        "predictions": "the run's report" if report else "made here from the retrained predictor",
        "predicted_check_db": max(r["predicted_check_db"] for r in rows),
        "gap_db": top - base,
        "fix_gain_db": {g: mean[f"fix {g}"]["psnr"] - base for g in groups},
        "break_cost_db": {g: top - mean[f"break {g}"]["psnr"] for g in groups},
        "isp_renders": isp.renders,
        "per_image": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"ideal - predicted: {out['gap_db']:.2f} dB PSNR over {len(rows)} images ({isp.renders} new renders)")
    print(f"predicted row against the benchmark's: at most {out['predicted_check_db']:.3f} dB apart per image")
    print(f"{'group':24} {'fix gains':>10} {'break costs':>12}")
    for g in groups:
        print(f"{g:24} {out['fix_gain_db'][g]:10.2f} {out['break_cost_db'][g]:12.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
