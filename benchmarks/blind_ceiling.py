"""How close can a predictor that sees only the RAW get to the ideal row? The ideal row knows the
unprocessing draw: its white balance, its brightness gain and its colour matrix. A RAW shows the
product of the scene's colours with the white balance and brightness (a grey wall under a red
cast and a red wall look alike), and hardly shows the matrix at all. This replaces, in each
held-out image's ideal setting, one part of the draw by its expected value over the draws (what a
predictor with no information about that part can do at best without scene priors) and scores it
on the real ISP: the cost of not knowing that part.

The images are those of benchmarks/results/predictor.json (24 crops of held-out photos); the
ideal setting is the best of its 3 x 3 denoise search, as in the table. Expected values: means
over 20000 draws of `hil_tune.unprocess` (its matrix mix and gains), clipped and snapped to the
profile's grid like the ideal's. A measurement of the target, not a method: nothing is trained.
Writes benchmarks/results/blind_ceiling.json. Usage: python benchmarks/blind_ceiling.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from provenance import header

from hil_tune.train.predictor_eval import best_ideal, reference_frame, run_firmware, score, snapped
from hil_tune.train.predictor_train import load_predictor
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer
from hil_tune.unprocess import random_gains, random_rgb2cam

ROOT = Path(__file__).resolve().parents[1]
DRAWS = 20000


def expected_draw(draws: int = DRAWS) -> dict[str, dict[str, float]]:
    """Mean of each part of the unprocessing draw, in the ISP's parameter names."""
    rng = np.random.default_rng(0)
    cam2rgb, gains = np.zeros((3, 3)), np.zeros(3)
    for _ in range(draws):
        cam2rgb += np.linalg.inv(random_rgb2cam(rng))
        gains += random_gains(rng)
    cam2rgb, (rgb_gain, red, blue) = cam2rgb / draws, gains / draws
    return {
        "matrix": {f"ccm{i}{j}": float(cam2rgb[i, j]) for i in range(3) for j in range(3)},
        "brightness": {"digital-gain": float(rgb_gain)},
        "white balance": {"gain-r": float(red), "gain-b": float(blue)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "predictor-scale")
    ap.add_argument("--bench", type=Path, default=ROOT / "benchmarks" / "results" / "predictor.json")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "blind_ceiling.json")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    _, side, profile = load_predictor(args.work / "predictor")
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    parts = expected_draw()
    unknown = {**{f"unknown {k}": [k] for k in parts}, "unknown matrix and brightness": ["matrix", "brightness"],
               "unknown draw": list(parts)}  # fmt: skip
    isp = CachedRenderer(BuiltinRenderer(profile, run_firmware(side), os.cpu_count() or 1), args.work / "render-cache")
    rows = []
    try:
        for r in bench["per_image"]:
            frame, ref = reference_frame(r["image"], profile, bench["config"]["crop"])
            ideal = best_ideal(isp, profile, frame, ref, lower, upper)[0]  # type: ignore[index]
            variants = {"ideal": ideal}
            for name, hidden in unknown.items():
                variants[name] = snapped(profile, ideal, {k: v for h in hidden for k, v in parts[h].items()})
            renders = isp.render([(frame, v) for v in variants.values()])
            rows.append({"image": r["image"], **{k: score(o, ref) for k, o in zip(variants, renders, strict=True)}})
    finally:
        isp.close()
    keys = [k for k in rows[0] if k != "image"]
    mean = {k: {m: float(np.mean([row[k][m] for row in rows])) for m in ("psnr", "ssim", "loss")} for k in keys}
    out = {
        **header("blind_ceiling"),
        "images": len(rows),
        "size": bench["config"]["crop"],
        "expected_draw": parts,
        "draws": DRAWS,
        "mean": mean,
        "cost_db": {k: mean["ideal"]["psnr"] - mean[k]["psnr"] for k in keys if k != "ideal"},
        "predicted_in_benchmark": bench["table"]["predicted"],
        "isp_renders": isp.renders,
        "per_image": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'row':32} {'PSNR':>7} {'SSIM':>6} {'loss':>7} {'cost dB':>8}")
    for k in keys:
        s = mean[k]
        print(f"{k:32} {s['psnr']:7.2f} {s['ssim']:6.3f} {s['loss']:7.4f} {out['cost_db'].get(k, 0.0):8.2f}")
    print(f"wrote {args.out} ({isp.renders} new renders)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
