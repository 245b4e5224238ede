"""Proxy speed alone, per device: training samples/s and inference ms per 512x512 patch, both models.

benchmarks/proxy.py measures speed too, but inside its fidelity run and on this machine's CPU only;
this script needs no sweep, so it also runs on a lent GPU machine (CUDA timings synchronised). Inputs
are bundled-photo mosaics and parameter sets drawn from the plausible region (all ten noise types,
so the collaborative filter's coloured-noise path is timed too).
Writes benchmarks/results/proxy_speed.json (proxy_speed_cuda.json when CUDA is timed, so a GPU
machine's figures are not overwritten by a CPU run). Usage: python benchmarks/proxy_speed.py
[--devices cpu cuda] [--profile synthetic|PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from provenance import header

from hil_tune.inputs import BUNDLED_IMAGES, bundled_frame
from hil_tune.models.isp_blocks import CFAS
from hil_tune.models.proxy import KINDS, ProxyConfig, build_proxy
from hil_tune.profiles import Profile, load_profile

ROOT = Path(__file__).resolve().parents[1]


def _inputs(profile: Profile, n: int, size: int, device: str, seed: int) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    mosaics, cfas = [], []
    for i in range(n):
        frame = bundled_frame(BUNDLED_IMAGES[i % len(BUNDLED_IMAGES)])
        h, w = frame.shape
        y = int(rng.integers(0, h - size + 1)) // 2 * 2
        x = int(rng.integers(0, w - size + 1)) // 2 * 2
        crop = frame.crop(y, x, size, size)
        mosaics.append(crop.normalized())
        cfas.append(CFAS.index(crop.cfa))
    u = profile.space.sample_lhc(n, seed=seed, region=profile.get_region("plausible"))
    return (
        torch.tensor(np.stack(mosaics)[:, None], device=device),
        torch.tensor(cfas, device=device),
        torch.tensor(u, dtype=torch.float32, device=device),
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_samples_per_s(profile: Profile, kind: str, device: str, steps: int, batch: int = 8) -> float:
    torch.manual_seed(0)
    model = build_proxy(profile, ProxyConfig(kind=kind)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mosaic, cfa, u = _inputs(profile, batch, 64, device, seed=1)
    target = torch.rand(batch, 3, 64, 64, device=device)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(mosaic, cfa, u), target).backward()
        opt.step()

    for _ in range(2):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t)


def inference_ms(profile: Profile, kind: str, device: str, repeats: int) -> float:
    model = build_proxy(profile, ProxyConfig(kind=kind)).to(device).eval()
    mosaic, cfa, u = _inputs(profile, 1, 512, device, seed=2)
    with torch.no_grad():
        model(mosaic, cfa, u)
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            model(mosaic, cfa, u)
        _sync(device)
    return (time.perf_counter() - t) / repeats * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    default = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ap.add_argument("--devices", nargs="+", default=default)
    ap.add_argument("--profile", default="synthetic", help="a bundled profile's name or a TOML path")
    ap.add_argument("--out", type=Path, help="default: results/proxy_speed.json, or proxy_speed_cuda.json with CUDA")
    args = ap.parse_args()
    results = ROOT / "benchmarks" / "results"
    out_path = args.out or results / ("proxy_speed_cuda.json" if "cuda" in args.devices else "proxy_speed.json")
    profile = load_profile(args.profile)
    figures: dict[str, dict[str, float]] = {}
    for device in args.devices:
        gpu = device == "cuda"
        for kind in KINDS:
            figures[f"{kind}/{device}"] = {
                "train_samples_per_s": round(train_samples_per_s(profile, kind, device, steps=30 if gpu else 5), 1),
                "inference_ms_per_512": round(inference_ms(profile, kind, device, repeats=10 if gpu else 2), 1),
            }
            f = figures[f"{kind}/{device}"]
            print(f"{kind:8} {device:5} train {f['train_samples_per_s']:8.1f} samples/s (64x64, batch 8)   "
                  f"inference {f['inference_ms_per_512']:9.1f} ms per 512x512", flush=True)  # fmt: skip
    out = {
        **header(
            "proxy_speed",
            torch_version=torch.__version__,
            device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),
        "config": {"model": ProxyConfig().as_dict(), "train": "Adam, batch 8, 64x64", "region": "plausible"},
        "figures": figures,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
