"""Proxy models and training: the grey-box blocks match the ISP, gradients reach every parameter,
training is deterministic and resumable, checkpoints refuse another profile, DDP runs on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import procs
import pytest
import torch
from capture_helpers import fast_sweep

from hil_tune.inputs import bundled_frame
from hil_tune.isp import SyntheticISP
from hil_tune.isp.firmwares import FIRMWARES, isp_for
from hil_tune.isp.foreign import ForeignISP
from hil_tune.isp.jpeg import jpeg_roundtrip
from hil_tune.models.isp_blocks import CFAS, jpeg
from hil_tune.models.proxy import GreyboxProxy, ProxyConfig, build_proxy
from hil_tune.profiles import load_profile
from hil_tune.train import checkpoint
from hil_tune.train.proxy_train import TrainConfig, load_proxy, prepare_structure, train_proxy


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return fast_sweep(tmp_path_factory.mktemp("proxy"))


@pytest.mark.parametrize("offset", [(0, 0), (0, 1), (1, 1)], ids=["RGGB", "GRBG", "BGGR"])
def test_greybox_structure_matches_the_isp_blocks(synthetic, offset):
    isp = SyntheticISP(synthetic)
    frame = bundled_frame("coffee").crop(100 + offset[0], 80 + offset[1], 48, 64)
    params = synthetic.space.sample_params(1, seed=4, region=synthetic.get_region("plausible"))[0]
    params["filter-strength"] = 0.0
    stages = isp.stages(frame.normalized(), frame.cfa, params)
    model = GreyboxProxy(synthetic, ProxyConfig())
    model.fix_standard()  # the standard candidate of every learnt choice is the synthetic ISP's block
    u = torch.tensor(synthetic.space.encode(params), dtype=torch.float32)[None]
    with torch.no_grad():
        mosaic = torch.from_numpy(frame.normalized())[None, None]
        display, linear = model.structural(mosaic, torch.tensor([CFAS.index(frame.cfa)]), u)
    assert np.abs(linear[0].permute(1, 2, 0).numpy() - stages.corrected).max() < 1e-5  # before sharpening
    err = display[0].permute(1, 2, 0).numpy() - stages.output / 255
    # JPEG included: what is left is where the JPEG block and libjpeg-turbo differ (measured 46.8-47.8 dB)
    assert 10 * np.log10(1 / np.mean(err**2)) > 44


@pytest.mark.parametrize("offset", [(0, 0), (1, 0)], ids=["RGGB", "GBRG"])
def test_greybox_denoiser_follows_bm3d(synthetic, offset):
    """With noise reduction on, the grey-box's collaborative filter (untrained) against the ISP's
    bm3d, on the mosaic and at the output, for two CFAs (the planes are packed per CFA as bm3d's
    are), over three settings drawn from the plausible region."""
    isp = SyntheticISP(synthetic)
    frame = bundled_frame("astronaut").crop(120 + offset[0], 200 + offset[1], 64, 64)
    mosaic = torch.from_numpy(frame.normalized())[None, None]
    cfa = torch.tensor([CFAS.index(frame.cfa)])
    model = GreyboxProxy(synthetic, ProxyConfig())
    model.fix_standard()

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2)))

    figures = []
    for params in synthetic.space.sample_params(3, seed=11, region=synthetic.get_region("plausible")):
        params["filter-strength"] = max(float(params["filter-strength"]), 0.5)
        stages = isp.stages(frame.normalized(), frame.cfa, params)
        u = torch.tensor(synthetic.space.encode(params), dtype=torch.float32)[None]
        with torch.no_grad():
            denoised = model.denoise(mosaic, cfa, u)[0, 0].numpy()
            display, _ = model.structural(mosaic, cfa, u)
        noisy = psnr(frame.normalized(), stages.denoised)
        figures.append(
            (psnr(denoised, stages.denoised), noisy, psnr(display[0].permute(1, 2, 0).numpy(), stages.output / 255))
        )
    on_mosaic, noisy, at_output = np.mean(figures, axis=0)
    assert all(f[0] > f[1] + 8 for f in figures), figures
    assert on_mosaic > 42 and at_output > 30, figures  # measured: 43.8 and 32.5 on RGGB


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
def test_the_jpeg_block_follows_libjpeg_and_passes_gradients(synthetic, subsampling):
    """The differentiable JPEG against Pillow + libjpeg-turbo on a real toned image (odd size: the
    padding path too): far closer than the image before compression is, and not flat in its input."""
    frame = bundled_frame("chelsea").crop(40, 60, 50, 70)
    params = synthetic.space.sample_params(1, seed=2, region=synthetic.get_region("plausible"))[0]
    params["filter-strength"] = 0.0
    toned = SyntheticISP(synthetic).stages(frame.normalized(), frame.cfa, params).toned
    real = jpeg_roundtrip(toned, quality=75, subsampling=subsampling).astype(np.float64)
    x = torch.tensor(toned.transpose(2, 0, 1)[None] / 255, dtype=torch.float32, requires_grad=True)
    out = jpeg(x, 75, subsampling)

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((a - real) ** 2)))

    modelled, uncompressed = psnr(out[0].detach().permute(1, 2, 0).numpy() * 255), psnr(toned.astype(np.float64))
    assert modelled > 36 and modelled > uncompressed + 8, (modelled, uncompressed)
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["greybox", "unet"])
def test_output_is_differentiable_in_every_parameter(synthetic, kind):
    torch.manual_seed(0)
    model = build_proxy(synthetic, ProxyConfig(kind=kind, width=8, depth=2))
    frame = bundled_frame("chelsea").center_crop(32, 32)
    mosaic = torch.from_numpy(frame.normalized())[None, None].repeat(2, 1, 1, 1)
    u = torch.tensor(synthetic.space.sample_lhc(2, seed=1, region=synthetic.get_region("plausible")),
                     dtype=torch.float32, requires_grad=True)  # fmt: skip
    out = model(mosaic, torch.tensor([CFAS.index(frame.cfa)] * 2), u)
    out.mean().backward()
    grad = u.grad.abs().sum(0)
    assert torch.isfinite(u.grad).all()
    missing = [n for n, g in zip(synthetic.space.names, grad, strict=True) if g == 0]
    assert not missing, f"no gradient for {missing}"


def test_training_is_deterministic_resumable_and_learns(sweep, tmp_path):
    root, prof = sweep
    cfg = TrainConfig(epochs=3, batch=4, optimizer="adam", lr=1e-3)
    model_cfg = ProxyConfig(width=8, depth=2)
    full = train_proxy(root, tmp_path / "a", prof, model_cfg, cfg)
    again = train_proxy(root, tmp_path / "b", prof, model_cfg, cfg)
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in again["history"]]
    part = train_proxy(root, tmp_path / "c", prof, model_cfg, TrainConfig(**{**cfg.__dict__, "epochs": 2}))
    assert len(part["history"]) == 2
    resumed = train_proxy(root, tmp_path / "c", prof, model_cfg, cfg, resume=True)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    a, _ = load_proxy(tmp_path / "a")
    c, _ = load_proxy(tmp_path / "c")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    side = json.loads((tmp_path / "a" / "model.json").read_text())
    assert side["split"]["val_sources"] > 0 and side["split"]["val_params"] > 0
    assert side["metrics"]["val_sources_psnr"] > 25  # the structure alone is already close
    assert (tmp_path / "a" / "curves.png").stat().st_size > 10_000
    torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)  # loads without pickle


def test_a_checkpoint_refuses_another_profile_or_structure(sweep, tmp_path):
    root, prof = sweep
    train_proxy(root, tmp_path / "r", prof, ProxyConfig(width=8, depth=2), TrainConfig(epochs=1, batch=8))
    with pytest.raises(checkpoint.CheckpointError, match="made for profile 'synthetic-fast'"):
        load_proxy(tmp_path / "r", load_profile("synthetic"))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        load_proxy(tmp_path / "nothing")
    load_proxy(tmp_path / "r")  # its own structure loads
    side_path = tmp_path / "r" / "model.json"
    side = json.loads(side_path.read_text())
    side["structure"] = 99  # another forward over the same weights
    side_path.write_text(json.dumps(side))
    with pytest.raises(checkpoint.CheckpointError, match=r"structure 99.*retrain"):
        load_proxy(tmp_path / "r")


def test_a_cosine_schedule_ends_at_zero_and_a_resume_keeps_the_schedule(sweep, tmp_path):
    root, prof = sweep
    cfg = TrainConfig(epochs=2, batch=8, optimizer="adam", lr=1e-3, lr_schedule="cosine", probe_steps=0)
    final = train_proxy(root, tmp_path / "r", prof, ProxyConfig(width=8, depth=2), cfg)
    assert [h["lr"] for h in final["history"]] == pytest.approx([5e-4, 0.0], abs=1e-12)  # after each epoch
    with pytest.raises(checkpoint.CheckpointError, match="--lr-schedule cosine, not step"):
        train_proxy(root, tmp_path / "r", prof, ProxyConfig(width=8, depth=2),
                    TrainConfig(**{**cfg.__dict__, "epochs": 3, "lr_schedule": "step"}), resume=True)  # fmt: skip


def test_ddp_with_torchrun_on_two_cpu_processes(sweep, tmp_path):
    root, _ = sweep
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(procs.free_port())
    code, err = procs.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
         "-m", "hil_tune.cli", "train", "proxy", str(root), "--out", str(tmp_path / "ddp"), "--epochs", "2",
         "--width", "8", "--depth", "2", "--batch", "4"],
        env, timeout=600,
    )  # fmt: skip
    assert code == 0, err[-3000:]
    side = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert side["world_size"] == 2 and len(side["history"]) == 2
    assert np.isfinite(side["metrics"]["train_loss"])


def test_cli_train_and_eval_proxy(sweep, tmp_path):
    root, _ = sweep
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "hil_tune.cli"]
    res = subprocess.run([*cli, "train", "proxy", str(root), "--out", str(run), "--epochs", "1", "--width", "8",
                          "--depth", "2", "--probe-steps", "4"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "model.json").read_text())["probe"]["steps"] == 4  # --probe-steps reached the probe
    again = subprocess.run([*cli, "train", "proxy", str(root), "--out", str(run)], capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    res = subprocess.run([*cli, "eval", "proxy", str(run), str(root), "--points", "3", "--rank-sets", "4"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["fidelity"]["unseen_images"]["psnr"]["n"] > 0
    assert -1 <= report["rank_agreement"]["spearman_mean"] <= 1
    assert set(report["sensitivity"]) >= {"gain-r", "ccm01", "usm-sigma"}
    for png in ("sensitivity.png", "side_by_side.png"):
        assert (run / "report" / png).stat().st_size > 10_000


def test_foreign_firmware_is_a_different_isp_on_the_same_knobs(synthetic):
    frame = bundled_frame("rocket").center_crop(64, 64)
    params = {"gain-r": 1.6, "ccm01": -0.3, "filter-strength": 0.8}
    a = SyntheticISP(synthetic).run_frame(frame, params)
    b = ForeignISP(synthetic).run_frame(frame, params)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 5
    brighter = ForeignISP(synthetic).run_frame(frame, {**params, "digital-gain": 1.5})
    assert brighter.mean() > b.mean()  # the knobs still do what they say


def _detail(img: np.ndarray) -> float:
    """Energy of the 4-neighbour Laplacian of the grey image."""
    x = img.astype(float).mean(-1)
    return float(np.mean((4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]) ** 2))


@pytest.mark.parametrize("firmware", ["handset", "studio"])
def test_each_further_firmware_is_its_own_isp_whose_knobs_still_act(synthetic, firmware):
    """The phone-like firmware (demosaic first, denoise in YCbCr after the colour blocks) and the
    camera-body one (lens shading left in, coring denoise, sharpening after the tone curve): each
    unlike every other firmware on the same knobs, and its gain, denoise and sharpening knobs act."""
    frame = bundled_frame("rocket").center_crop(64, 64)
    params = {"gain-r": 1.6, "ccm01": -0.3, "filter-strength": 0.0, "usm-amount": 0.1}
    isp = isp_for(firmware, synthetic)
    c = isp.run_frame(frame, params)
    for other in FIRMWARES:
        if other != firmware:
            assert np.abs(c.astype(int) - isp_for(other, synthetic).run_frame(frame, params).astype(int)).mean() > 3
    assert isp.run_frame(frame, {**params, "digital-gain": 1.5}).mean() > c.mean()
    smoothed = isp.run_frame(frame, {**params, "filter-strength": 2.0, "noise-var": 1.0})
    sharpened = isp.run_frame(frame, {**params, "usm-amount": 1.5, "usm-sigma": 1.0})
    assert _detail(smoothed) < 0.8 * _detail(c) < 0.8 * _detail(sharpened)


def test_the_studio_firmware_leaves_lens_shading_in(synthetic):
    """A flat grey frame comes out darker in the corners than in the centre, red the most."""
    flat = isp_for("studio", synthetic).run(np.full((64, 96), 0.25, np.float32), "RGGB",
                                            {"filter-strength": 0.0, "usm-amount": 0.1})  # fmt: skip
    ratio = flat[:4, :4].astype(float).mean((0, 1)) / flat[30:34, 46:50].astype(float).mean((0, 1))
    assert (ratio < 0.95).all() and ratio[0] < ratio[2], ratio


def test_training_freezes_the_denoiser_scales_only_when_it_caches_the_filter(synthetic):
    """What train_proxy does before its first epoch (prepare_structure): with the cache (the
    default) the collaborative filter's two noise scales stay what the probe left (here no probe:
    their prior, 0); without it they keep learning. Noise reduction on, so the filter acts."""
    frames = [bundled_frame(n).center_crop(32, 32) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    mosaic = torch.stack([torch.from_numpy(f.normalized())[None] for f in frames])
    cfa = torch.tensor([CFAS.index(f.cfa) for f in frames])
    u = torch.tensor(synthetic.space.sample_lhc(4, seed=3, region=synthetic.get_region("plausible")),
                     dtype=torch.float32)  # fmt: skip
    u[:, synthetic.space.names.index("filter-strength")] = 0.6
    target = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scales = {}
    for mib in (2048, 0):
        torch.manual_seed(0)
        model = GreyboxProxy(synthetic, ProxyConfig(width=8, depth=2))
        model.fix_standard()
        prepare_structure(model, None, TrainConfig(probe_steps=0, denoise_cache_mib=mib), torch.device("cpu"),
                          probe=False)  # fmt: skip
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(mosaic, cfa, u), target).backward()
            opt.step()
        scales[mib] = model.nr_log_var.detach().clone()
        assert (model.denoise_cache is not None) == (mib > 0)
    assert torch.equal(scales[2048], torch.zeros(2)) and scales[0].abs().min() > 0
