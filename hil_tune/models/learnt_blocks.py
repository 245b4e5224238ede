"""Blocks whose fixed parts the grey-box proxy learns per device, and a learnt choice among blocks.

Why: a device's knobs are declared in its profile (name, range, ISP group), but how the device
implements each block is not. The synthetic ISP's blocks in torch follow that ISP to 36 dB and a
device built otherwise (the `foreign` firmware) to 19.5 dB: every fixed assumption (the tone
curve, the order of gains and colour matrix, the demosaic, the denoiser, per-channel sharpening)
costs between 2 and 12 dB when it is wrong (benchmarks/foreign_budget.py; the README's proxy
tables). So each assumption becomes a learnt part, initialised at the common choice:

- `MonotoneCurve`: the display transfer curve as a monotone piecewise-linear table (knots uniform
  in x^(1/2.2), where display curves are nearly straight), initialised from the profile's curve;
- `DetailMix`: unsharp masking whose detail image passes a learnt 3x3 mixing (identity: per
  channel; rank one: luminance only; anything between);
- `LearntDemosaic`: learnt 5x5 linear filters, a learnt directional green (estimator and
  gradient taps, a soft comparison), learnt colour differences and learnt frame edges: bilinear,
  Malvar, Hamilton-Adams and OpenCV's edge-aware demosaic are all points of it. It starts at the
  profile's method or at edge-directed interpolation (`edge_directed`); the proxy holds one of
  each and a learnt choice between them;
- `Bilateral`: an edge-preserving filter on the packed planes whose spatial and range widths are
  a learnt law of the profile's noise-reduction knobs (linear in their logarithms, plus a small
  MLP); beside BM3D's collaborative filter when the profile declares BM3D's knobs;
- `Shrinkage`: coring on the packed planes (detail above a Gaussian base, soft-thresholded), its
  base width and threshold a learnt law of the same knobs; a third denoiser candidate;
- `DisplayMix`: a 3x3 colour mixing after the tone curve (saturation, hue), started at none;
- `LensShading`: a radial gain per colour site of the mosaic (lens-shading correction, vignetting),
  started at no shading;
- `Choice`: a softmax-weighted mix of candidate blocks (gains before or after the colour matrix;
  one denoiser or another). Candidates whose weight falls below a
  threshold after a warm-up are pruned for good, so a decided choice costs one branch.

None of these looks at a firmware's name: the same recipe learns whichever structure the device's
samples support.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom
from torch import Tensor, nn

from hil_tune.isp.demosaic import FILTERS
from hil_tune.isp.jpeg import JFIF_YCBCR
from hil_tune.isp.sharpen import BLUR_TRUNCATE
from hil_tune.models import isp_blocks
from hil_tune.transfer import apply_curve

_KNOT_POWER = 2.2  # knots uniform in x ** (1 / 2.2)


def _inverse_softplus(y: np.ndarray) -> np.ndarray:
    return y + np.log(-np.expm1(-y))


class MonotoneCurve(nn.Module):
    """y = f(x) on [0, 1], non-decreasing, piecewise linear on `knots` intervals uniform in
    x^(1/2.2); both ends free (a filmic curve tops out below 1). Initialised to a named curve."""

    def __init__(self, curve: str = "srgb", gamma: float = 2.2, knots: int = 64) -> None:
        super().__init__()
        self.knots = knots
        x = np.linspace(0.0, 1.0, knots + 1) ** _KNOT_POWER
        y = apply_curve(x, curve, gamma).astype(np.float64)
        steps = np.maximum(np.diff(y), 1e-5)
        self.start = nn.Parameter(torch.tensor(float(y[0]), dtype=torch.float32))
        self.steps = nn.Parameter(torch.tensor(_inverse_softplus(steps), dtype=torch.float32))

    def table(self) -> Tensor:
        return torch.cat([self.start[None], self.start + torch.cumsum(F.softplus(self.steps), 0)])

    def forward(self, x: Tensor) -> Tensor:
        y = self.table()
        # NaN would index the table at -2^63; it is left to the loss's finite check to report.
        t = torch.nan_to_num(x, nan=0.0).clamp(1e-7, 1.0) ** (1 / _KNOT_POWER) * self.knots
        i = t.detach().floor().clamp(0, self.knots - 1)
        f = t - i
        i = i.long()
        return (y[i] * (1 - f) + y[i + 1] * f).clamp(0, 1)


class DetailMix(nn.Module):
    """Sharpening with a learnt detail image: x + amount * K sum_k b_k (x - blur_k(x)), where blur_k
    is a Gaussian of SCALES[k] times the knob's sigma. K is a learnt 3x3 mixing (identity: per
    channel; rank one: luminance only); the band weights b start at (1, 0), an unsharp mask, and
    (-1, 1) is a difference of Gaussians at (sigma, 2 sigma), the band-pass many ISPs sharpen with."""

    SCALES = (1.0, 2.0)

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(3))
        self.bands = nn.Parameter(torch.tensor([1.0] + [0.0] * (len(self.SCALES) - 1)))

    def forward(self, rgb: Tensor, blurred: Sequence[Tensor], amount: Tensor) -> Tensor:
        """`blurred`: rgb blurred at each of SCALES times the knob's sigma."""
        band = sum(b * (rgb - blur) for b, blur in zip(self.bands, blurred, strict=True))
        detail = torch.einsum("ij,bjhw->bihw", self.mix, band)
        return (rgb + amount[:, None, None, None] * detail).clamp(0, 1)

    def weights(self) -> dict[str, float]:
        """Where the sharpening sits: (1, 0) is an unsharp mask, (-1, 1) a difference of Gaussians."""
        return {f"x-blur@{c:g}sigma": round(b.item(), 4) for c, b in zip(self.SCALES, self.bands, strict=True)}


class LensShading(nn.Module):
    """A learnt radial gain on the mosaic, per colour site: exp(a r^2 + b r^4), r the distance
    from the frame's centre over its half-diagonal; (a, b) = 0 at the start, a gain of exactly 1.

    Why: lens-shading correction (or the vignetting a device leaves in) is fixed processing that
    no knob reaches and that depends on where a pixel sits in the frame, which a convolutional
    residual can hardly tell from the picture; the usual radial law is six numbers, so the data
    pins it down from a few samples. Its centre is the frame's: a device that renders the frame
    it is sent (the simulator, a sweep's patches) shades that frame."""

    def __init__(self) -> None:
        super().__init__()
        self.coef = nn.Parameter(torch.zeros(3, 2))  # R, G, B sites x (r^2, r^4)

    @staticmethod
    def radius2(h: int, w: int, like: Tensor) -> Tensor:
        """(h, w) squared distance of each pixel's centre from the frame's, over the half-diagonal's."""
        y = torch.arange(h, device=like.device, dtype=like.dtype) + 0.5 - h / 2
        x = torch.arange(w, device=like.device, dtype=like.dtype) + 0.5 - w / 2
        return (y[:, None] ** 2 + x[None, :] ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)

    def forward(self, mosaic: Tensor, masks: Tensor) -> Tensor:
        """(B, 1, H, W) mosaic and its (B, 4, H, W) site masks (R, Gr, Gb, B) -> the shaded mosaic."""
        r2 = self.radius2(*mosaic.shape[-2:], mosaic)
        gains = torch.exp(self.coef[:, :1, None] * r2 + self.coef[:, 1:, None] * r2**2)  # (3, H, W)
        return mosaic * (isp_blocks.colour_masks(masks) * gains).sum(1, keepdim=True)

    def corner_gains(self) -> dict[str, float]:
        """The gain at the frame's corners per colour: 1 everywhere is no shading."""
        return {c: round(math.exp(float(a + b)), 4) for c, (a, b) in zip("RGB", self.coef.detach(), strict=True)}


class DisplayMix(nn.Module):
    """A learnt 3x3 colour mixing of the display-encoded image, the identity at the start.

    Why: many ISPs set saturation or hue after the tone curve, in YCbCr (the `studio` firmware
    boosts chroma 1.2x there): a linear map of the encoded RGB that no knob reaches and that the
    colour matrix, acting on linear values before the curve, cannot stand in for."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(3))

    def forward(self, display: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", self.matrix, display).clamp(0, 1)

    def ycbcr_gains(self) -> dict[str, float]:
        """The mixing seen in JFIF YCbCr: its diagonal (1, 1, 1 is none; a saturation boost raises Cb, Cr)."""
        t = torch.tensor(JFIF_YCBCR, dtype=torch.float32)
        m = t @ self.matrix.detach() @ torch.linalg.inv(t)
        return {k: round(float(m[i, i]), 4) for i, k in enumerate(("Y", "Cb", "Cr"))}


class Choice(nn.Module):
    """A learnt, prunable choice among named candidate blocks: output = sum_k w_k candidate_k.

    Candidates are thunks, so a pruned one is never computed. `prune` drops candidates whose
    weight is below `threshold` (never the strongest); `fix` keeps one (tests, or a user who knows).
    """

    def __init__(self, names: Sequence[str], threshold: float = 0.05) -> None:
        super().__init__()
        self.names = tuple(names)
        self.threshold = threshold
        self.logits = nn.Parameter(torch.zeros(len(self.names)))
        self.register_buffer("alive", torch.ones(len(self.names), dtype=torch.bool))

    def weights(self) -> Tensor:
        return torch.softmax(self.logits.masked_fill(~self.alive, -math.inf), 0)

    def forward(self, candidates: dict[str, Callable[[], Tensor]]) -> Tensor:
        w = self.weights()
        live = [k for k, name in enumerate(self.names) if self.alive[k]]
        if len(live) == 1:
            return candidates[self.names[live[0]]]()
        out = None
        for k in live:
            term = w[k] * candidates[self.names[k]]()
            out = term if out is None else out + term
        assert out is not None
        return out

    @torch.no_grad()
    def prune(self) -> list[str]:
        """Drop weak candidates; returns the names dropped."""
        w = self.weights()
        weak = (w < self.threshold) & self.alive
        weak[int(w.argmax())] = False
        self.alive &= ~weak
        return [self.names[k] for k in range(len(self.names)) if weak[k]]

    @torch.no_grad()
    def fix(self, name: str) -> None:
        self.alive.copy_(torch.tensor([n == name for n in self.names]))

    def chosen(self) -> dict[str, float]:
        w = self.weights().detach()
        return {n: round(float(w[k]), 4) for k, n in enumerate(self.names) if self.alive[k]}


def _conv1d(x: Tensor, taps: Sequence[float] | Tensor, axis: int) -> Tensor:
    """Correlate (B, 1, H, W) with a centred 1-D kernel along H (axis 2) or W (axis 3), mirrored
    borders without repeating the edge sample (keeps the CFA parity)."""
    k = taps if isinstance(taps, Tensor) else torch.tensor(taps, dtype=x.dtype, device=x.device)
    r = len(taps) // 2
    if axis == 3:
        return F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def _blend_border(x: Tensor, weight: Tensor) -> Tensor:
    """Move the outermost rows and columns of (B, C, H, W) towards their inward neighbours by
    `weight`: devices finish their frame edges differently (mirror, replicate, crop)."""
    top = x[:, :, :1] + weight * (x[:, :, 1:2] - x[:, :, :1])
    bottom = x[:, :, -1:] + weight * (x[:, :, -2:-1] - x[:, :, -1:])
    x = torch.cat([top, x[:, :, 1:-1], bottom], 2)
    left = x[..., :1] + weight * (x[..., 1:2] - x[..., :1])
    right = x[..., -1:] + weight * (x[..., -2:-1] - x[..., -1:])
    return torch.cat([left, x[..., 1:-1], right], 3)


class LearntDemosaic(nn.Module):
    """A demosaic whose filters are learnt, spanning the common families from one start.

    Green at red and blue sites is a learnt blend of an isotropic 5x5 estimate and a directional
    one: learnt 5-tap estimators along rows and columns, weighted by a soft comparison (learnt
    sharpness) of learnt first- and second-order gradient detectors. Red and blue are a learnt
    blend of linear 5x5 estimates from the mosaic and bilinearly spread colour differences to
    green. Bilinear, Malvar-He-Cutler, Hamilton-Adams and OpenCV's edge-aware demosaic are points
    of this family; it starts at the named linear method (`method`, the profile's).
    """

    def __init__(self, method: str = "malvar2004") -> None:
        super().__init__()
        g_at_rb, x_row, x_col, x_opp = (torch.tensor(np.asarray(k), dtype=torch.float32) for k in FILTERS[method])
        self.iso = nn.Parameter(g_at_rb)
        self.linear = nn.Parameter(torch.stack([x_row, x_col, x_opp]))
        self.estimator = nn.Parameter(torch.tensor([-0.25, 0.5, 0.5, 0.5, -0.25]))
        self.gradients = nn.Parameter(torch.tensor([[0.0, 1.0, 0.0, -1.0, 0.0], [-1.0, 0.0, 2.0, 0.0, -1.0]]))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(100.0)))
        # Blends: 0 is the linear method the block starts from, 1 the directional green / colour differences.
        self.directional = nn.Parameter(torch.tensor(0.0))
        self.differences = nn.Parameter(torch.tensor(0.0))
        # How far the outermost row and column take their inward neighbour's value (0: their own).
        self.border = nn.Parameter(torch.tensor(0.0))

    @classmethod
    def edge_directed(cls) -> LearntDemosaic:
        """The block started at edge-directed interpolation (Hibbard; Laroche and Prescott): green
        at red and blue sites is the mean of its two neighbours along the direction of the smaller
        first-order gradient, red and blue are bilinear.

        Why a second start: the family holds both the linear methods and the edge-directed ones,
        but gradient descent inside a whole proxy crosses it slowly. From Malvar's filters towards
        OpenCV's edge-aware demosaic the block stalled at half-way in eight epochs (its Laplacian
        terms amplify the noise that the edge-directed methods leave alone), which cost the blocks
        1.8 dB on the `studio` firmware's worst 5%; from this start it is 45 dB from that demosaic
        before any training. Camera demosaics are commonly of one family or the other, so the
        proxy offers both starts and its probe picks (GreyboxProxy)."""
        block = cls("bilinear")
        with torch.no_grad():
            block.estimator.copy_(torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0]))
            block.gradients[1].zero_()  # first-order differences of the green neighbours alone
            block.directional.fill_(1.0)
        return block

    def blends(self) -> dict[str, float]:
        """Where the block sits: 0 is the linear method it started from."""
        found = {"directional": self.directional, "colour-differences": self.differences, "border": self.border}
        return {k: round(v.item(), 4) for k, v in found.items()}

    def _green_at_rb(self, mosaic: Tensor, iso: Tensor) -> Tensor:
        gh, gv = _conv1d(mosaic, self.estimator, 3), _conv1d(mosaic, self.estimator, 2)
        dh = sum(_conv1d(mosaic, g, 3).abs() for g in self.gradients)
        dv = sum(_conv1d(mosaic, g, 2).abs() for g in self.gradients)
        # Relative difference: a device's comparison does not depend on the signal's level.
        w_h = torch.sigmoid(self.log_sharpness.exp() * (dv - dh) / (dv + dh + 1e-4))
        return (iso + self.directional * (w_h * gh + (1 - w_h) * gv - iso))[:, 0]

    def forward(self, mosaic: Tensor, masks: Tensor) -> Tensor:
        kernels = torch.cat([self.iso[None], self.linear])[:, None]
        iso, x_row, x_col, x_opp = F.conv2d(F.pad(mosaic, (2, 2, 2, 2), mode="reflect"), kernels).split(1, 1)
        g_at_rb = self._green_at_rb(mosaic, iso)
        linear = isp_blocks.assemble(mosaic, masks, g_at_rb, x_row[:, 0], x_col[:, 0], x_opp[:, 0])
        green = linear[:, 1:2]
        out = []
        bilinear = (0.5, 1.0, 0.5)
        for channel, site in ((0, masks[:, :1]), (2, masks[:, 3:])):
            spread = _conv1d(_conv1d((mosaic - green) * site, bilinear, 3), bilinear, 2)
            lin = linear[:, channel : channel + 1]
            out.append(lin + self.differences * (green + spread - lin))
        return _blend_border(torch.cat([out[0], green, out[1]], 1), self.border).clamp(0, 1)


class KnobLaw(nn.Module):
    """Base of a block whose settings are a learnt law of the noise-reduction knobs' features
    (`knob_features`): linear in them (their logarithms act multiplicatively) plus a small MLP that
    starts at zero, so every law starts at the constant `start`, whatever the knobs."""

    def __init__(self, n_features: int, start: Sequence[float], hidden: int = 16) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, len(start))
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(torch.tensor(start))
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.SiLU(), nn.Linear(hidden, len(start)))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def law(self, features: Tensor) -> Tensor:
        """(B, len(start)) settings for (B, n_features) knob features."""
        return self.linear(features) + self.mlp(features)


class Bilateral(KnobLaw):
    """Edge-preserving filter on (B, C, h, w) planes, each plane guided by itself, over a
    (2r+1)^2 window: weights exp(-d^2 / 2 s^2 + bias_d - (I_q - I_p)^2 / 2 c^2), where the widths
    s and c and a blend towards the input are a learnt law of the noise-reduction knobs' features."""

    def __init__(self, n_features: int, radius: int = 3, hidden: int = 16) -> None:
        super().__init__(n_features, [math.log(1.0), math.log(0.03), 2.0], hidden)
        self.radius = radius
        n = 2 * radius + 1
        self.offset_bias = nn.Parameter(torch.zeros(n * n))
        dy, dx = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1), indexing="ij")
        self.register_buffer("dist2", torch.tensor((dy**2 + dx**2).reshape(-1), dtype=torch.float32))

    def forward(self, planes: Tensor, features: Tensor) -> Tensor:
        b, c, h, w = planes.shape
        law = self.law(features)
        # Log widths bounded (e^-8 .. e^8): a width that underflows to 0 makes the centre weight 0/0.
        widths = law[:, :2].clamp(-8.0, 8.0)
        s2 = (2 * widths[:, 0]).exp()[:, None, None, None, None]
        c2 = (2 * widths[:, 1]).exp()[:, None, None, None, None]
        blend = torch.sigmoid(law[:, 2])[:, None, None, None]
        r = self.radius
        n = 2 * r + 1
        patches = F.unfold(F.pad(planes, (r,) * 4, mode="reflect"), n).view(b, c, n * n, h, w)
        diff2 = (patches - planes[:, :, None]) ** 2
        logits = -self.dist2[None, None, :, None, None] / (2 * s2) + self.offset_bias[None, None, :, None, None]
        weights = torch.softmax(logits - diff2 / (2 * c2), dim=2)
        filtered = (weights * patches).sum(2)
        return planes + blend * (filtered - planes)


class Shrinkage(KnobLaw):
    """Coring on (B, C, h, w) planes: the detail above a Gaussian base, soft-thresholded, then a
    blend towards the input: x + blend (base + d - clip(d, -t, t) - x), d = x - base, where the
    base's width, the threshold t and the blend are a learnt law of the noise-reduction knobs'
    features (`KnobLaw`, as `Bilateral`'s).

    Why: many ISPs denoise by shrinking detail (wavelet or pyramid coring) instead of averaging
    similar neighbours. A bilateral filter cannot stand in for that: it keeps every excursion larger
    than its range width whole, where coring takes t off each, and it cannot flatten a plane without
    blurring it. The `studio` firmware cores: with its own denoised mosaic in place of the proxy's
    bilateral one, the proxy's trained blocks scored 28 to 33 dB on its eight worst images, against
    23 to 26."""

    MAX_WIDTH = 3.0  # the base's widest Gaussian, in pixels of a plane (six of the frame)

    def __init__(self, n_features: int, hidden: int = 16) -> None:
        super().__init__(n_features, [math.log(1.0), math.log(0.02), 2.0], hidden)
        self.radius = int(BLUR_TRUNCATE * self.MAX_WIDTH + 0.5)

    def forward(self, planes: Tensor, features: Tensor) -> Tensor:
        law = self.law(features)
        width = law[:, 0].clamp(math.log(0.1), math.log(self.MAX_WIDTH)).exp()
        threshold = law[:, 1].clamp(-12.0, 0.0).exp()[:, None, None, None]
        blend = torch.sigmoid(law[:, 2])[:, None, None, None]
        base = isp_blocks.gaussian_blur(planes, width, self.radius)
        detail = planes - base
        cored = detail - torch.maximum(torch.minimum(detail, threshold), -threshold)
        return planes + blend * (base + cored - planes)


def knob_features(values: Tensor, lo: Tensor, hi: Tensor, u: Tensor) -> Tensor:
    """Features of a group of knobs for a learnt law: the encoded value u, and the log of the value
    for knobs whose range is non-negative (strengths and variances act multiplicatively)."""
    positive = lo >= 0
    span = (hi - lo).clamp(min=1e-12)
    logs = torch.log(values.clamp(min=0) + 1e-3 * span) * positive
    return torch.cat([u, logs], 1)
