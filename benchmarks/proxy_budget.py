"""Where the grey-box proxy's error comes from: an error budget on the proxy benchmark's sweep.

For each held-out sample with noise reduction on (the photos the trained proxy never saw), the
real ISP is re-run to get its intermediate images, and the ISP output is compared with:
- the image before JPEG (what ignoring compression would cost);
- the differentiable JPEG block (isp_blocks.jpeg) on the ISP's own pre-JPEG image (how exact it is);
- the grey-box blocks fed the ISP's own denoised mosaic, then that JPEG block (every block modelled
  exactly but the denoiser);
- the grey-box structure as the proxy runs it (its collaborative filter in place of bm3d, then JPEG);
- the trained grey-box proxy (structure plus residual network).
And, on the mosaic, the collaborative filter against BM3D. Needs benchmarks/proxy.py to have run (its
sweep and trained grey-box run). Writes benchmarks/results/proxy_budget.json.
Usage: python benchmarks/proxy_budget.py [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from provenance import header

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.isp import SyntheticISP
from hil_tune.metrics import psnr
from hil_tune.models import isp_blocks as blocks
from hil_tune.raw import CFA_PATTERNS
from hil_tune.train.data import SweepDataset
from hil_tune.train.proxy_train import TrainConfig, load_proxy, make_split
from hil_tune.ui import progress

ROOT = Path(__file__).resolve().parents[1]


def hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy() * 255


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy_budget.json")
    args = ap.parse_args()
    data, run = args.work / "sweep-synthetic", args.work / "run-synthetic-greybox"
    profile = DatasetFolder(data).plan().load_profile()
    model, side = load_proxy(run, profile)
    ds = SweepDataset(data)
    split = make_split(ds, TrainConfig(**side["train"]))  # the run's own split: held-out photos stay unseen
    isp = SyntheticISP(profile)
    settings = profile.pipeline

    def jpeg(display: torch.Tensor) -> torch.Tensor:
        return blocks.jpeg(display, settings.jpeg_quality, settings.jpeg_subsampling)

    rows: dict[str, list[float]] = {}
    with torch.no_grad(), progress() as bar:
        for pos in bar.track(split.val_sources, description="error budget"):
            s = ds[pos]
            params = profile.space.decode(s["encoded"].numpy())
            if params["filter-strength"] == 0:
                continue
            st = isp.stages(s["mosaic"][0].numpy(), CFA_PATTERNS[s["cfa"]], params)
            mosaic, cfa, u = s["mosaic"][None], torch.tensor([s["cfa"]]), s["encoded"][None]
            toned = torch.from_numpy(st.toned.transpose(2, 0, 1)[None].astype(np.float32) / 255)
            exact, _ = model.develop(torch.from_numpy(st.denoised)[None, None], cfa, u)
            ours = model.denoise(mosaic, cfa, u)
            figures = {
                "before_jpeg": psnr(st.toned, st.output, 255),
                "jpeg_model_on_isp_image": psnr(hwc(jpeg(toned)), st.output, 255),
                "blocks_with_isp_denoised_mosaic": psnr(hwc(jpeg(exact)), st.output, 255),
                "proxy_blocks_without_residual": psnr(hwc(model.structural(mosaic, cfa, u)[0]), st.output, 255),
                "trained_proxy": psnr(hwc(model(mosaic, cfa, u).clamp(0, 1)), st.output, 255),
                "mosaic_proxy_denoiser_vs_bm3d": psnr(ours[0, 0].numpy(), st.denoised, 1.0),
                "mosaic_noisy_vs_bm3d": psnr(s["mosaic"][0].numpy(), st.denoised, 1.0),
            }
            for k, v in figures.items():
                rows.setdefault(k, []).append(v)
    summary = {k: {"mean": float(np.mean(v)), "worst": float(np.min(v)), "n": len(v)} for k, v in rows.items()}
    out = {
        **header("proxy_budget", torch_version=torch.__version__),
        "config": {
            "sweep": str(data),
            "run": str(run),
            "samples": "the run's held-out photos, filter-strength > 0",
            "unit": "PSNR dB against the ISP output; mosaic_* against BM3D's denoised mosaic ([0, 1] scale)",
        },
        "psnr_db": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for k, v in summary.items():
        print(f"{k:34} mean {v['mean']:6.2f} dB   worst {v['worst']:6.2f} dB   n={v['n']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
