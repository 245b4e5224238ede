"""The grey-box's learnt blocks: each starts at the common choice, keeps its constraint (a monotone
curve, a region-free choice that prunes), and the structure probe picks the block order a device
really has, on the synthetic ISP and on the foreign firmware alike, with no code keyed on either."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from capture_helpers import FIVE_PHOTOS, fast_profile

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.inputs import bundled_frame
from hil_tune.isp.foreign import ForeignISP
from hil_tune.isp.jpeg import JFIF_YCBCR
from hil_tune.models import isp_blocks as blocks
from hil_tune.models.learnt_blocks import (
    Bilateral,
    Choice,
    DetailMix,
    DisplayMix,
    LearntDemosaic,
    LensShading,
    MonotoneCurve,
    Shrinkage,
)
from hil_tune.models.proxy import GreyboxProxy, ProxyConfig
from hil_tune.profiles import load_profile
from hil_tune.train.data import SweepDataset
from hil_tune.train.proxy_train import TrainConfig, make_split, probe_structure
from hil_tune.transfer import apply_curve


@pytest.mark.parametrize("curve", ["srgb", "gamma", "linear"])
def test_the_curve_starts_at_the_profile_curve_and_stays_monotone(curve):
    c = MonotoneCurve(curve, 2.2)
    x = torch.linspace(0, 1, 20001)
    expected = torch.tensor(apply_curve(x.double().numpy(), curve, 2.2))
    assert (c(x).double() - expected).abs().max() * 255 < 0.25  # a quarter of an 8-bit step
    with torch.no_grad():  # a seeded draw: the test must not depend on which tests ran before it
        c.steps.add_(torch.randn(c.steps.shape, generator=torch.Generator().manual_seed(0)) * 3)
    # Monotone up to float32 rounding: interpolating between two knots a softplus of -9 apart can
    # step back by an ulp (CI saw it with an unseeded draw); a curve that really falls drops by
    # far more than 1e-6.
    assert (c(x).diff() >= -1e-6).all()


def _blurs(rgb: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
    return [blocks.gaussian_blur(rgb, c * sigma, 16) for c in DetailMix.SCALES]


def test_detail_mixing_spans_per_channel_luminance_and_band_pass_sharpening():
    rgb = torch.rand(2, 3, 16, 16)
    sigma = torch.tensor([1.0, 2.0])
    blurs = _blurs(rgb, sigma)
    amount = torch.tensor([0.5, 1.5])
    mix = DetailMix()
    torch.testing.assert_close(mix(rgb, blurs, amount), blocks.unsharp_mask(rgb, amount, sigma, 8))
    luma = torch.tensor([0.299, 0.587, 0.114])
    with torch.no_grad():
        mix.mix.copy_(torch.ones(3, 1) * luma)
    detail = torch.einsum("c,bchw->bhw", luma, rgb - blurs[0])[:, None]
    torch.testing.assert_close(mix(rgb, blurs, amount), (rgb + amount[:, None, None, None] * detail).clamp(0, 1))
    with torch.no_grad():
        mix.bands.copy_(torch.tensor([-1.0, 1.0]))  # a difference of Gaussians at (sigma, 2 sigma)
    detail = torch.einsum("c,bchw->bhw", luma, blurs[0] - blurs[1])[:, None]
    torch.testing.assert_close(mix(rgb, blurs, amount), (rgb + amount[:, None, None, None] * detail).clamp(0, 1))
    assert mix.weights() == {"x-blur@1sigma": -1.0, "x-blur@2sigma": 1.0}


def _fit(block: torch.nn.Module, draw, held_out: tuple, steps: int, lr: float) -> tuple[float, float]:
    """Squared error of `block` on `held_out` (inputs..., target) before and after `steps` Adam
    steps on fresh draws of the same form."""

    def error() -> float:
        with torch.no_grad():
            return float(((block(*held_out[:-1]) - held_out[-1]) ** 2).mean())

    before = error()
    opt = torch.optim.Adam(block.parameters(), lr=lr)
    for _ in range(steps):
        *inputs, target = draw()
        loss = ((block(*inputs) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, error()


def test_detail_mixing_learns_a_luminance_difference_of_gaussians_from_an_unsharp_start():
    """Gradient descent alone, from the per-channel unsharp mask it starts at, to the handset
    firmware's sharpening (a difference of Gaussians on luminance): the band and the mixing move to
    it and the error falls a hundredfold on images it did not fit."""
    gen = torch.Generator().manual_seed(0)
    luma = torch.tensor([0.299, 0.587, 0.114])

    def batch() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        rgb = blocks.gaussian_blur(torch.rand(8, 3, 32, 32, generator=gen), torch.full((8,), 0.7), 4) * 0.6 + 0.2
        sigma, amount = 0.5 + 1.5 * torch.rand(8, generator=gen), 0.2 + torch.rand(8, generator=gen)
        blurs = _blurs(rgb, sigma)
        detail = torch.einsum("c,bchw->bhw", luma, blurs[0] - blurs[1])[:, None]
        return rgb, blurs, amount, (rgb + amount[:, None, None, None] * 2.0 * detail).clamp(0, 1)

    mix = DetailMix()
    before, after = _fit(mix, batch, batch(), steps=300, lr=0.05)
    assert after < before / 100, (before, after)
    bands = mix.weights()
    assert bands["x-blur@1sigma"] < -0.5 and bands["x-blur@2sigma"] > 0.5, bands


def test_lens_shading_starts_at_no_shading_and_learns_a_radial_falloff_at_any_frame_size():
    """Exactly the identity at the start; from there, gradient descent on 64 px mosaics reaches a
    device's colour-dependent vignetting (corners at 0.6 of red, 0.7 of green, 0.75 of blue), and
    the learnt law holds on a 96 x 128 frame it never saw, since the radius is the frame's."""
    gen = torch.Generator().manual_seed(0)
    corner = torch.tensor([0.6, 0.7, 0.75])

    def batch(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mosaic = 0.1 + 0.8 * torch.rand(4, 1, h, w, generator=gen)
        masks = blocks.site_masks(torch.randint(0, 4, (4,), generator=gen), h, w)
        r2 = LensShading.radius2(h, w, mosaic)
        falloff = corner[:, None, None] ** r2  # (3, h, w): 1 at the centre, `corner` at the corners
        return mosaic, masks, mosaic * (blocks.colour_masks(masks) * falloff).sum(1, keepdim=True)

    shading = LensShading()
    mosaic, masks, _ = batch(64, 64)
    assert torch.equal(shading(mosaic, masks), mosaic)
    assert shading.corner_gains() == {"R": 1.0, "G": 1.0, "B": 1.0}
    before, after = _fit(shading, lambda: batch(64, 64), batch(96, 128), steps=200, lr=0.05)
    assert after < before / 100, (before, after)
    gains = shading.corner_gains()
    assert np.allclose([gains[c] for c in "RGB"], corner.tolist(), atol=0.02), gains


def test_display_mixing_starts_at_none_and_learns_a_saturation_boost():
    """The identity at the start; gradient descent reaches a 1.2x chroma boost in YCbCr (the studio
    firmware's), read back as its YCbCr gains."""
    ycc = torch.tensor(JFIF_YCBCR, dtype=torch.float32)
    boost = torch.linalg.inv(ycc) @ torch.diag(torch.tensor([1.0, 1.2, 1.2])) @ ycc
    gen = torch.Generator().manual_seed(0)
    mix = DisplayMix()

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = 0.2 + 0.6 * torch.rand(4, 3, 16, 16, generator=gen)
        return x, torch.einsum("ij,bjhw->bihw", boost, x).clamp(0, 1)

    x, _ = batch()
    assert torch.equal(mix(x), x) and mix.ycbcr_gains() == {"Y": 1.0, "Cb": 1.0, "Cr": 1.0}
    before, after = _fit(mix, batch, batch(), steps=300, lr=0.02)
    assert after < before / 100, (before, after)
    gains = mix.ycbcr_gains()
    assert np.allclose([gains["Y"], gains["Cb"], gains["Cr"]], [1.0, 1.2, 1.2], atol=0.03), gains


def test_a_choice_mixes_prunes_and_never_computes_a_pruned_candidate():
    choice = Choice(["a", "b", "c"], threshold=0.1)
    with torch.no_grad():
        choice.logits.copy_(torch.tensor([2.0, 0.0, -3.0]))
    calls = []

    def cand(name, value):
        def run():
            calls.append(name)
            return torch.tensor(value)

        return run

    out = choice({"a": cand("a", 1.0), "b": cand("b", 2.0), "c": cand("c", 3.0)})
    w = torch.softmax(torch.tensor([2.0, 0.0, -3.0]), 0)
    torch.testing.assert_close(out, (w * torch.tensor([1.0, 2.0, 3.0])).sum())
    assert choice.prune() == ["c"] and "c" not in choice.chosen()
    calls.clear()
    choice({"a": cand("a", 1.0), "b": cand("b", 2.0), "c": cand("c", 3.0)})
    assert calls == ["a", "b"]
    choice.fix("b")
    assert choice.chosen() == {"b": 1.0}
    choice.threshold = 1.1
    assert choice.prune() == []  # the strongest candidate always stays


@pytest.mark.parametrize("method", ["malvar2004", "bilinear"])
def test_the_learnt_demosaic_starts_at_the_profile_method_exactly(method):
    frame = bundled_frame("coffee").crop(200, 200, 64, 64)
    cfa = torch.tensor([blocks.CFAS.index(frame.cfa)])
    masks = blocks.site_masks(cfa, 64, 64)
    flat = (masks * torch.tensor([0.2, 0.5, 0.5, 0.7])[None, :, None, None]).sum(1, keepdim=True)
    with torch.no_grad():
        out = LearntDemosaic(method)(flat, masks)
        torch.testing.assert_close(out, torch.tensor([0.2, 0.5, 0.7])[None, :, None, None].expand(1, 3, 64, 64))
        mosaic = torch.from_numpy(frame.normalized())[None, None]
        torch.testing.assert_close(LearntDemosaic(method)(mosaic, masks), blocks.demosaic(mosaic, masks, method))


def test_the_edge_directed_start_interpolates_along_edges_and_is_near_an_edge_aware_demosaic():
    """LearntDemosaic.edge_directed: a flat field comes back flat; across a vertical step in green
    the missing greens take their vertical neighbours' mean (no zipper), where the linear start
    mixes both sides; and on noisy photo crops it starts far nearer OpenCV's edge-aware demosaic
    (the foreign firmware's) than Malvar's filters do."""
    masks = blocks.site_masks(torch.tensor([blocks.CFAS.index("RGGB")]), 16, 16)
    flat = (masks * torch.tensor([0.2, 0.5, 0.5, 0.7])[None, :, None, None]).sum(1, keepdim=True)
    edge = LearntDemosaic.edge_directed()
    with torch.no_grad():
        rgb = torch.tensor([0.2, 0.5, 0.7])[None, :, None, None].expand(1, 3, 16, 16)
        torch.testing.assert_close(edge(flat, masks), rgb)
        step = torch.where(torch.arange(16) < 8, 0.2, 0.6).expand(16, 16)[None, None].clone()
        green = edge(step, masks)[0, 1]
        linear = LearntDemosaic("bilinear")(step, masks)[0, 1]
    rb = (masks[0, 0] + masks[0, 3]).bool()
    torch.testing.assert_close(green[rb], step[0, 0][rb])
    assert (linear[rb] - step[0, 0][rb]).abs().max() > 0.05
    foreign = ForeignISP(load_profile("synthetic"))
    rng = np.random.default_rng(0)
    near = {"edge-directed": [], "malvar2004": []}
    for name in ("coffee", "astronaut", "chelsea", "rocket"):
        frame = bundled_frame(name).crop(120, 160, 48, 48)
        m = np.clip(frame.normalized() * 3 + rng.normal(0, 0.02, (48, 48)), 0, 1).astype(np.float32)
        target = torch.from_numpy(foreign.demosaic(m, frame.cfa).transpose(2, 0, 1))[None]
        args = torch.from_numpy(m)[None, None], blocks.site_masks(torch.tensor([blocks.CFAS.index(frame.cfa)]), 48, 48)
        with torch.no_grad():
            near["edge-directed"].append(_display_psnr(edge(*args), target))
            near["malvar2004"].append(_display_psnr(LearntDemosaic("malvar2004")(*args), target))
    assert min(near["edge-directed"]) > max(near["malvar2004"]) + 8, near


def _display_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR after a display gamma, where a demosaic's errors in the shadows show."""
    return float(10 * torch.log10(1 / ((_display(a) - _display(b)) ** 2).mean()))


def _display(x: torch.Tensor) -> torch.Tensor:
    return (x + 1e-3) ** (1 / 2.2)


def test_the_learnt_demosaic_learns_a_demosaic_it_does_not_start_from():
    """From Malvar's filters to OpenCV's edge-aware demosaic (the foreign firmware's: a hard
    directional green, bilinear red and blue, replicated frame edges) by gradient descent alone,
    scored on a photo it did not fit."""
    foreign = ForeignISP(load_profile("synthetic"))
    crops = [bundled_frame(name).crop(120, 160, 48, 48) for name in ("coffee", "astronaut", "chelsea", "rocket")]
    data = []
    for frame in crops:
        m = frame.normalized()
        cfa = torch.tensor([blocks.CFAS.index(frame.cfa)])
        target = torch.from_numpy(foreign.demosaic(m, frame.cfa).transpose(2, 0, 1))[None]
        data.append((torch.from_numpy(m)[None, None], blocks.site_masks(cfa, 48, 48), target))
    dem = LearntDemosaic()
    with torch.no_grad():
        before = _display_psnr(dem(*data[-1][:2]), data[-1][2])
    opt = torch.optim.Adam(dem.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(300):
        mosaic, masks, target = data[step % 3]
        loss = ((_display(dem(mosaic, masks)) - _display(target)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _display_psnr(dem(*data[-1][:2]), data[-1][2])
    blends = dem.blends()
    assert after > before + 8, (before, after)
    assert blends["directional"] > 0.5 and blends["border"] > 0.5, blends


def test_the_bilateral_law_spans_identity_to_smoothing():
    # distinct levels 0.01 apart, as noise makes them: no neighbour within the narrowest range width
    planes = (torch.randperm(1024, generator=torch.Generator().manual_seed(0)).float() / 100).view(1, 4, 16, 16)
    bil = Bilateral(n_features=2)
    with torch.no_grad():
        bil.linear.bias.copy_(torch.tensor([0.0, -12.0, 10.0]))  # a range width far below the noise (bounded at e^-8)
    torch.testing.assert_close(bil(planes, torch.zeros(1, 2)), planes)
    with torch.no_grad():
        bil.linear.bias.copy_(torch.tensor([0.0, 5.0, 10.0]))  # range width far above: a Gaussian
    smooth = bil(planes, torch.zeros(1, 2))
    assert smooth.std() < 0.6 * planes.std()
    feats = torch.zeros(1, 2, requires_grad=True)
    bil.linear.weight.data.normal_()
    bil(planes, feats).sum().backward()
    assert feats.grad.abs().sum() > 0


def test_shrinkage_cores_detail_by_a_learnt_threshold_and_spans_identity_to_smoothing():
    """Coring takes the threshold off every detail excursion and zeroes the smaller ones: a dark
    plane with one spike keeps the spike less the threshold, and around it only the base's spread
    of the spike; with the blend at zero it is the input."""
    planes = torch.zeros(1, 4, 16, 16)
    planes[:, :, 8, 8] = 1.0
    shr = Shrinkage(n_features=2)
    with torch.no_grad():
        shr.linear.bias.copy_(torch.tensor([math.log(3.0), math.log(0.25), 20.0]))
        out = shr(planes, torch.zeros(1, 2))
    torch.testing.assert_close(out[:, :, 8, 8], torch.full((1, 4), 0.75))
    around = out.clone()
    around[:, :, 8, 8] = 0
    assert 0 < around.max() < 0.02
    noisy = 0.5 + 0.02 * torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shr.linear.bias.copy_(torch.tensor([math.log(2.0), math.log(0.1), 10.0]))  # a wide base, all detail cored
        assert shr(noisy, torch.zeros(1, 2)).std() < 0.2 * noisy.std()
        shr.linear.bias.copy_(torch.tensor([math.log(2.0), math.log(0.1), -20.0]))  # no blend: the input
        torch.testing.assert_close(shr(noisy, torch.zeros(1, 2)), noisy)
    feats = torch.zeros(1, 2, requires_grad=True)
    shr.linear.bias.data[2] = 0.0
    shr.linear.weight.data.normal_()
    shr(noisy, feats).sum().backward()
    assert feats.grad.abs().sum() > 0


def _probe_on(tmp_path, firmware: str) -> tuple[GreyboxProxy, dict, dict]:
    """A fresh grey-box, before and after the structure probe on a small sweep of `firmware`:
    (the probed model, its two demosaics' state before ("declared.NAME", "edge-directed.NAME"),
    the probe's report)."""
    prof = load_profile(fast_profile(tmp_path))
    plan = build_plan(prof, resolve_sources(FIVE_PHOTOS), samples_per_source=6, patch=32, region="fast")
    folder = DatasetFolder(tmp_path / "ds")
    folder.create(plan)
    run_capture(folder.root, CaptureSettings("sim", {"sensor_size": 32, "firmware": firmware}))
    torch.manual_seed(0)
    model = GreyboxProxy(prof, ProxyConfig(width=8, depth=2))
    ds = SweepDataset(folder.root)
    cfg = TrainConfig(batch=8, probe_steps=40, probe_crop=32)
    split = make_split(ds, cfg)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, split.train), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    demosaics = {"declared": model.demosaicker, "edge-directed": model.edge_demosaicker}
    demosaic = {f"{name}.{k}": v.clone() for name, block in demosaics.items() for k, v in block.state_dict().items()}
    return model, demosaic, probe_structure(model, loader, cfg, torch.device("cpu"))


@pytest.mark.parametrize(
    ("firmware", "expected", "demosaic_from"),
    [("synthetic", "gains-first", "declared"), ("foreign", "matrix-first", "edge-directed")],
)
def test_the_probe_learns_the_order_of_gains_and_matrix(tmp_path, firmware, expected, demosaic_from):
    """One recipe, two devices: the same probe on a small sweep of each picks the order that
    device really has (foreign applies its colour matrix before its gains) and the demosaic start
    nearer its demosaic (the synthetic ISP's is the profile's Malvar, foreign's OpenCV's edge-aware)."""
    model, demosaic, report = _probe_on(tmp_path, firmware)
    # The demosaics' filters learn at the network's rate in training, never at the probe's; the lens
    # shading's radius is the frame's, which the probe's crops are not.
    for name, block in {"declared": model.demosaicker, "edge-directed": model.edge_demosaicker}.items():
        for k, v in block.state_dict().items():
            torch.testing.assert_close(v, demosaic[f"{name}.{k}"], rtol=0, atol=0)
    assert torch.equal(model.shading.coef, torch.zeros(3, 2))
    weights = report["weights"]["order"]
    assert weights[expected] > 0.6, report
    assert report["weights"]["demosaic-from"][demosaic_from] > 0.6, report
    assert report["loss_last"] < report["loss_first"]
    assert np.isclose(sum(model.structure()["order"].values()), 1.0)


@pytest.mark.parametrize(("firmware", "expected"), [("synthetic", "linear"), ("studio", "display")])
def test_the_probe_learns_where_a_device_sharpens(tmp_path, firmware, expected):
    """The same probe picks sharpening on linear values for the synthetic ISP and after the tone
    curve for the studio firmware (luma unsharp masking in display space); the display mixing
    learns in training, at the network's rate, never in the probe."""
    model, _, report = _probe_on(tmp_path, firmware)
    assert report["weights"]["sharpen-at"][expected] > 0.6, report
    assert torch.equal(model.display_mix.matrix, torch.eye(3))
