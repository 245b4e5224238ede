"""Proxy speed alone, per device: training samples/s and inference ms per 512x512 patch, both models.

benchmarks/proxy.py measures speed too, but inside its fidelity run and on this machine's CPU only;
this script needs no sweep, so it also runs on a lent GPU machine (CUDA timings synchronised). Inputs
are bundled-photo mosaics and parameter sets drawn from the plausible region (all ten noise types,
so the collaborative filter's coloured-noise path is timed too).

Training is timed as training runs: epochs over a set of distinct samples (64x64, batch 8), the
first epoch apart from the later ones, since the grey-box filters each sample once per run once its
denoiser cache is on (`GreyboxProxy.cache_denoiser`, the default after the structure probe). The
grey-box is timed three ways: every candidate block alive (before the probe decides; what this
benchmark timed until 2026-12), the structure a probe settles on for the synthetic ISP (collaborative
filter, gains first, Malvar), and that structure with the cache. `run_samples_per_s` is the rate of
a whole run of RUN_EPOCHS epochs: one cold epoch, the rest warm.
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
from hil_tune.models.output_cache import OutputCache
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


RUN_EPOCHS = 20  # the CLI's default epochs


def train_rates(profile: Profile, kind: str, device: str, samples: int, epochs: int, *, setup: str) -> dict[str, float]:
    """samples/s of the first epoch and of the later ones over `samples` distinct samples, batch 8.
    setup: 'all' (every learnt choice alive), 'probed' (the synthetic ISP's blocks chosen) or
    'cached' (probed, with the denoiser cache)."""
    torch.manual_seed(0)
    model = build_proxy(profile, ProxyConfig(kind=kind)).to(device)
    if setup in ("probed", "cached") and hasattr(model, "fix_standard"):
        model.fix_standard()
    if setup == "cached" and hasattr(model, "cache_denoiser"):
        model.cache_denoiser(OutputCache())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    mosaic, cfa, u = _inputs(profile, samples, 64, device, seed=1)
    target = torch.rand(samples, 3, 64, 64, device=device)

    def epoch() -> float:
        _sync(device)
        t = time.perf_counter()
        for i in range(0, samples, 8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(
                model(mosaic[i : i + 8], cfa[i : i + 8], u[i : i + 8]), target[i : i + 8]
            ).backward()
            opt.step()
        _sync(device)
        return time.perf_counter() - t

    cold = epoch()
    warm = min(epoch() for _ in range(epochs - 1))
    return {
        "first_epoch_samples_per_s": round(samples / cold, 2),
        "later_epochs_samples_per_s": round(samples / warm, 2),
        "run_samples_per_s": round(RUN_EPOCHS * samples / (cold + (RUN_EPOCHS - 1) * warm), 2),
    }


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
            for setup in ("all", "probed", "cached") if kind == "greybox" else ("all",):
                name = f"{kind}/{device}" + ("" if kind != "greybox" else f"/{setup}")
                f = train_rates(profile, kind, device, samples=64 if gpu else 16, epochs=4 if gpu else 3, setup=setup)
                if setup == "all":  # inference runs no cache and no training choice: one figure per kind
                    f["inference_ms_per_512"] = round(inference_ms(profile, kind, device, repeats=10 if gpu else 2), 1)
                figures[name] = f
                print(f"{name:22} train {f['first_epoch_samples_per_s']:7.1f} first epoch, "
                      f"{f['later_epochs_samples_per_s']:7.1f} later, {f['run_samples_per_s']:7.1f} over "
                      f"{RUN_EPOCHS} epochs (samples/s, 64x64, batch 8)", flush=True)  # fmt: skip
    base = figures.get("greybox/cpu/all")
    if base:
        for setup in ("probed", "cached"):
            ratio = figures[f"greybox/cpu/{setup}"]["run_samples_per_s"] / base["run_samples_per_s"]
            figures[f"greybox/cpu/{setup}"]["run_speedup_over_all"] = round(ratio, 2)
            print(f"greybox {setup}: {ratio:.1f}x the run rate of every candidate alive (same run)")
    out = {
        **header(
            "proxy_speed",
            torch_version=torch.__version__,
            device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),
        "config": {
            "model": ProxyConfig().as_dict(),
            "train": "Adam, batch 8, 64x64, epochs over 16 distinct samples (64 on CUDA)",
            "run_epochs": RUN_EPOCHS,
            "region": "plausible",
        },
        "figures": figures,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
