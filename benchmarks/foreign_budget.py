"""What each fixed assumption costs on a device built otherwise: the `foreign` firmware with one of
its blocks swapped for the synthetic ISP's, against the foreign firmware itself.

Why: a proxy whose blocks are the synthetic ISP's assumes each of them; this measures, block by
block, how far each assumption alone puts the output from the device (PSNR over the same samples),
which is what the grey-box's learnt parts (learnt_blocks.py) are there to remove. Samples: the
plausible region of the synthetic profile, 128x128 crops of the bundled photos (4 unprocessing
draws each), 10 parameter sets per draw, seed 0.
Writes benchmarks/results/foreign_budget.json. Usage: python benchmarks/foreign_budget.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from provenance import header

from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.isp import SyntheticISP
from hil_tune.isp.ccm import ccm_from_params
from hil_tune.isp.demosaic import demosaic
from hil_tune.isp.denoise import denoise_mosaic
from hil_tune.isp.foreign import ForeignISP
from hil_tune.isp.sharpen import unsharp_mask
from hil_tune.isp.tone import tone_uint8
from hil_tune.metrics import psnr
from hil_tune.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]


class Swapped(ForeignISP):
    """The foreign firmware with one block replaced by the synthetic ISP's."""

    swap = ""

    def denoise(self, m, cfa, p):
        if self.swap != "denoise: BM3D":
            return super().denoise(m, cfa, p)
        s = self.settings
        return denoise_mosaic(m, cfa, filter_strength=float(p["filter-strength"]), noise_type=str(p["noise-type"]),
                              noise_var=float(p["noise-var"]), lambda_thr3d=float(p["lambda-thr3d"]),
                              mu2=float(p["mu2"]), noise_var_scale=s.noise_var_scale, base_profile=s.bm3d_profile,
                              threads=1)  # fmt: skip

    def demosaic(self, m, cfa):
        return demosaic(m, cfa, "malvar2004") if self.swap == "demosaic: Malvar" else super().demosaic(m, cfa)

    def colour(self, rgb, p):
        if self.swap != "order: gains before the matrix":
            return super().colour(rgb, p)
        gains = np.array([p["gain-r"], p["gain-g"], p["gain-b"]], dtype=np.float32) * float(p["digital-gain"])
        return np.clip(np.clip(rgb * gains, 0, 1) @ ccm_from_params(p).T, 0, 1)

    def sharpen(self, rgb, p):
        if self.swap != "sharpening: per channel":
            return super().sharpen(rgb, p)
        return unsharp_mask(rgb, amount=float(p["usm-amount"]), sigma=float(p["usm-sigma"]))

    def tone(self, rgb):
        return tone_uint8(rgb, curve="srgb") if self.swap == "tone: sRGB" else super().tone(rgb)

    def compress(self, toned):
        return toned if self.swap == "compression: none" else super().compress(toned)


SWAPS = ("denoise: BM3D", "demosaic: Malvar", "order: gains before the matrix", "sharpening: per channel",
         "tone: sRGB", "compression: none")  # fmt: skip


def main() -> int:
    profile = load_profile("synthetic")
    device = ForeignISP(profile)
    swapped = {name: Swapped(profile) for name in SWAPS}
    for name, isp in swapped.items():
        isp.swap = name
    figures: dict[str, list[float]] = {name: [] for name in SWAPS}
    figures["all of them (the synthetic ISP)"] = []
    synthetic = SyntheticISP(profile)
    region = profile.get_region("plausible")
    for k, source in enumerate(resolve_sources(["bundled@4"])):
        frame = load_source(source, profile, 0).center_crop(128, 128)
        for params in profile.space.sample_params(10, seed=k, region=region):
            target = device.run_frame(frame, params)
            for name, isp in swapped.items():
                figures[name].append(psnr(isp.run_frame(frame, params), target, 255))
            figures["all of them (the synthetic ISP)"].append(psnr(synthetic.run_frame(frame, params), target, 255))
    table = {
        name: {"mean_db": round(float(np.mean(v)), 2), "worst5_db": round(float(np.percentile(v, 5)), 2), "n": len(v)}
        for name, v in figures.items()
    }
    config = {"sources": "bundled@4", "crop": 128, "sets_per_draw": 10, "region": "plausible", "seed": 0}
    out = {**header("foreign_budget"), "config": config, "swapped_block": table}
    path = ROOT / "benchmarks" / "results" / "foreign_budget.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'the foreign firmware with this block of the synthetic ISP':52} mean / worst 5% (dB)")
    for name, row in table.items():
        print(f"{name:52} {row['mean_db']:6.2f} / {row['worst5_db']:6.2f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
