"""Differentiable proxies of an ISP: the paper's U-Net (baseline) and our grey-box proxy (default).

Both map (RAW mosaic, its CFA, encoded parameters u in [0, 1]^P) to the display-encoded RGB the
ISP would output, and are differentiable in u.

- `unet` (Tseng et al. / Qin et al.): the RAW packed by Bayer position into R, G, B planes, the
  parameters expanded to constant planes and concatenated with the feature maps at every encoder
  level; a U-Net regresses the output. It must learn multiplications (gains, colour matrix) by
  addition, which is where it stalls.
- `greybox`: the profile's standard blocks as differentiable code with their parameters wired in
  (BM3D's two collaborative-filtering stages, see collaborative.py; white balance and digital
  gain, demosaic, colour matrix, unsharp mask, tone curve, JPEG, see
  isp_blocks.py), followed by a residual U-Net whose features are modulated by the parameters
  (FiLM) and which learns what the device does beyond that structure: what the denoiser does that
  the collaborative filter does not, compression noise, a different tone curve or block order.
  Blocks the profile does not declare are skipped (a black-box ISP gets demosaic + residual only),
  so the same model serves hardware.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hil_tune.isp.blocks import params_of
from hil_tune.isp.denoise import NOISE_TYPES, noise_psd
from hil_tune.isp.sharpen import blur_radius
from hil_tune.models import isp_blocks as blocks
from hil_tune.models.collaborative import NoiseTables, collaborative_denoise, noise_tables
from hil_tune.models.learnt_blocks import (
    Bilateral,
    Choice,
    DetailMix,
    DisplayMix,
    KnobLaw,
    LearntDemosaic,
    LensShading,
    MonotoneCurve,
    Shrinkage,
    knob_features,
)
from hil_tune.models.output_cache import OutputCache, digest
from hil_tune.profiles import Profile

KINDS = ("greybox", "unet")
# Bumped when a model's forward changes with the same weights, so a
# checkpoint trained under another structure is refused instead of silently computing something else.
STRUCTURE = {"greybox": 10, "unet": 1}
NR, WB, CCM, USM = (params_of(b) for b in ("denoise", "white_balance", "ccm", "sharpen"))  # the block table
NR_GROUP = "noise-reduction"
# Epochs of training before candidate blocks whose weight has fallen below their threshold are pruned.
PRUNE_AFTER_EPOCHS = 2


@dataclass(frozen=True)
class ProxyConfig:
    kind: str = "greybox"
    width: int = 16  # channels at full resolution; doubles per level
    depth: int = 3  # U-Net levels
    film_dim: int = 64

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ParamValues(nn.Module):
    """Encoded u -> parameter values, the continuous relaxation of the grid (min + u (max - min))."""

    def __init__(self, profile: Profile) -> None:
        super().__init__()
        self.names = profile.space.names
        lo = [s.min if s.kind == "grid" else 0.0 for s in profile.space]
        hi = [s.max if s.kind == "grid" else 1.0 for s in profile.space]
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(hi, dtype=torch.float32))

    def forward(self, u: Tensor) -> Tensor:
        return self.lo + u * (self.hi - self.lo)

    def has(self, names: tuple[str, ...]) -> bool:
        return all(n in self.names for n in names)

    def pick(self, values: Tensor, names: tuple[str, ...]) -> Tensor:
        return values[:, [self.names.index(n) for n in names]]


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"),
        nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1, padding_mode="reflect"),
        nn.LeakyReLU(0.1),
    )


class FiLM(nn.Module):
    """Per-channel scale and shift of a feature map from the parameter embedding."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 2 * channels)
        # Near-identity at the start, but not exactly: every parameter must have a gradient path.
        nn.init.normal_(self.lin.weight, std=1e-3)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        gamma, beta = self.lin(emb).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class UNet(nn.Module):
    """A plain U-Net; `extra` constant planes (the parameters) join every encoder level, or FiLM
    modulates every level when `film_dim` is given."""

    def __init__(self, cin: int, cout: int, width: int, depth: int, extra: int = 0, film_dim: int = 0) -> None:
        super().__init__()
        self.extra, self.depth = extra, depth
        widths = [width * 2**i for i in range(depth)]
        self.enc = nn.ModuleList()
        c = cin
        for w in widths:
            self.enc.append(conv_block(c + extra, w))
            c = w
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth - 1, 0, -1)
        )
        self.dec = nn.ModuleList(conv_block(2 * widths[i - 1], widths[i - 1]) for i in range(depth - 1, 0, -1))
        self.film_enc = nn.ModuleList(FiLM(film_dim, w) for w in widths) if film_dim else None
        self.film_dec = (
            nn.ModuleList(FiLM(film_dim, widths[i - 1]) for i in range(depth - 1, 0, -1)) if film_dim else None
        )
        self.out = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x: Tensor, planes: Tensor | None = None, emb: Tensor | None = None) -> Tensor:
        skips = []
        for i, enc in enumerate(self.enc):
            if i:
                x = nn.functional.avg_pool2d(x, 2)
            if self.extra:
                assert planes is not None
                x = torch.cat([x, planes[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)
            x = enc(x)
            if self.film_enc is not None:
                assert emb is not None
                x = self.film_enc[i](x, emb)
            skips.append(x)
        for j, (up, dec) in enumerate(zip(self.up, self.dec, strict=True)):
            x = up(x)
            x = dec(torch.cat([x, skips[-2 - j]], 1))
            if self.film_dec is not None:
                assert emb is not None
                x = self.film_dec[j](x, emb)
        return self.out(x)


class UNetProxy(nn.Module):
    """The paper's proxy: RAW by Bayer position (3 planes) + parameters as constant planes."""

    def __init__(self, profile: Profile, config: ProxyConfig) -> None:
        super().__init__()
        self.config = config
        self.n_params = len(profile.space)
        self.net = UNet(3, 3, config.width, config.depth, extra=self.n_params)

    def forward(self, mosaic: Tensor, cfa: Tensor, u: Tensor) -> Tensor:
        _check(mosaic, self.config.depth)
        masks = blocks.site_masks(cfa, *mosaic.shape[-2:])
        pack3 = blocks.colour_masks(masks) * mosaic
        return self.net(pack3, planes=u)


class GreyboxProxy(nn.Module):
    """Differentiable blocks with the device's knobs wired in, their fixed parts learnt (see
    learnt_blocks.py), plus a FiLM residual U-Net for what no block explains.

    Structure: denoise (a learnt choice among BM3D's collaborative filter, when the profile
    declares BM3D's knobs, a bilateral filter and coring, whose settings are a learnt law of the
    noise-reduction knobs) -> a learnt radial lens shading -> gains and colour matrix (a learnt
    choice of their order: gains on the mosaic before demosaic, or on RGB after the matrix) with a
    learnt demosaic (its filters, its directional green, its colour differences and its frame
    edges; a learnt choice of its start: the profile's method or edge-directed interpolation) ->
    sharpening with a learnt band and detail mixing and a learnt monotone tone curve (a learnt
    choice of their order: sharpening on linear values, or on display values after the curve) -> a
    learnt display colour mixing -> JPEG as the profile sets it -> residual.
    """

    def __init__(self, profile: Profile, config: ProxyConfig) -> None:
        super().__init__()
        self.config = config
        self.values = ParamValues(profile)
        self.use_wb, self.use_ccm, self.use_usm = self.values.has(WB), self.values.has(CCM), self.values.has(USM)
        self.noise_types = profile.space["noise-type"].choices if "noise-type" in profile.space.names else None
        self.use_bm3d = self.values.has(NR) and set(self.noise_types or ()) <= set(NOISE_TYPES)
        self.nr_knobs = [i for i, s in enumerate(profile.space) if s.group == NR_GROUP]
        self.noise_var_scale = profile.pipeline.noise_var_scale
        # Learnt log-scales of the coefficient noise variances of the two stages: room for what the
        # bm3d binary does otherwise (its reference grid, its block-matching correction for correlated noise).
        self.nr_log_var = nn.Parameter(torch.zeros(2))
        self._noise_tables: dict[tuple[int, int], tuple[NoiseTables, NoiseTables]] = {}
        self.denoise_cache: OutputCache | None = None  # see cache_denoiser
        denoisers = (["collaborative"] if self.use_bm3d else []) + (["bilateral", "shrinkage"] if self.nr_knobs else [])
        self.denoiser = Choice(denoisers) if denoisers else None
        self.bilateral = Bilateral(2 * len(self.nr_knobs)) if self.nr_knobs else None
        self.shrinkage = Shrinkage(2 * len(self.nr_knobs)) if self.nr_knobs else None
        self.order = Choice(["gains-first", "matrix-first"]) if self.use_wb or self.use_ccm else None
        self.shading = LensShading()
        # The demosaic starts at the profile's method and at edge-directed interpolation, a learnt
        # choice between them (LearntDemosaic.edge_directed: why two starts).
        self.demosaic_from = Choice(["declared", "edge-directed"])
        self.demosaicker = LearntDemosaic(profile.pipeline.demosaic)
        self.edge_demosaicker = LearntDemosaic.edge_directed()
        # Sharpening before the tone curve (on linear values) or after it (on display values, as
        # many ISPs sharpen luma in YCbCr): a learnt choice, each position with its own detail mixing.
        self.sharpen_at = Choice(["linear", "display"]) if self.use_usm else None
        self.detail, self.detail_display = DetailMix(), DetailMix()
        self.display_mix = DisplayMix()
        self.curve = MonotoneCurve(profile.pipeline.tone, profile.pipeline.gamma)
        self.jpeg_quality = int(profile.pipeline.jpeg_quality)
        self.subsampling = profile.pipeline.jpeg_subsampling if self.jpeg_quality > 0 else "4:4:4"
        sigma_max = profile.space["usm-sigma"].max if self.use_usm else 1.0
        self.usm_radii = [blur_radius(c * float(sigma_max or 1.0)) for c in DetailMix.SCALES]
        n = len(profile.space)
        self.embed = nn.Sequential(
            nn.Linear(n, config.film_dim), nn.SiLU(), nn.Linear(config.film_dim, config.film_dim)
        )
        # Input: the structural output (display), the linear image before tone, and the mosaic.
        self.residual = UNet(7, 3, config.width, config.depth, film_dim=config.film_dim)
        nn.init.normal_(self.residual.out.weight, std=1e-3)
        nn.init.zeros_(self.residual.out.bias)

    def choices(self) -> dict[str, Choice]:
        """The learnt structural choices, by name."""
        found = {"denoiser": self.denoiser, "order": self.order, "demosaic-from": self.demosaic_from,
                 "sharpen-at": self.sharpen_at}  # fmt: skip
        return {k: v for k, v in found.items() if v is not None}

    def structure(self) -> dict[str, dict[str, float]]:
        """What the proxy has learnt of the device's structure: each choice's surviving weights,
        where the learnt demosaic sits between the linear method it started from and the others,
        the sharpening's band (unsharp mask or difference of Gaussians) where it acts, the lens
        shading's corner gains and the display mixing in YCbCr."""
        at_display = self.sharpen_at is not None and self.sharpen_at.chosen().get("display", 0.0) > 0.5
        edge = self.demosaic_from.chosen().get("edge-directed", 0.0) > 0.5
        return {**{name: choice.chosen() for name, choice in self.choices().items()},
                "demosaic": (self.edge_demosaicker if edge else self.demosaicker).blends(),
                "sharpening": (self.detail_display if at_display else self.detail).weights(),
                "shading": self.shading.corner_gains(), "display-mix": self.display_mix.ycbcr_gains()}  # fmt: skip

    def fix_standard(self) -> None:
        """Fix every choice at the synthetic ISP's block (tests compare that structure with the ISP)."""
        standard = {"denoiser": "collaborative", "order": "gains-first", "demosaic-from": "declared",
                    "sharpen-at": "linear"}  # fmt: skip
        for name, choice in self.choices().items():
            choice.fix(standard[name] if standard[name] in choice.names else choice.names[0])

    def end_epoch(self, epoch: int) -> dict[str, list[str]]:
        """After the warm-up epochs, prune candidate blocks the data has voted down."""
        if epoch + 1 < PRUNE_AFTER_EPOCHS:
            return {}
        dropped = {name: choice.prune() for name, choice in self.choices().items()}
        return {k: v for k, v in dropped.items() if v}

    def structure_parameters(self) -> list[nn.Parameter]:
        """Parameters of the learnt structure (choices, curve, mixing, laws): trained at a higher
        rate than the residual network, since each is a handful of numbers the data pins down.

        Not the demosaic's: its hundred filter taps and blends wander at that rate where the data
        pins them down weakly (on the synthetic ISP, whose demosaic it starts at, the blends
        drifted to 0.3 and held-out fidelity fell 2 dB within six epochs), so they learn at the
        network's rate, and the structure probe, which trains this list, leaves them alone. Nor the
        display mixing's: at the probe's and the structure's rates its nine numbers drifted on the
        synthetic ISP, which has none (chroma gains 1.03, 0.5 dB of held-out fidelity lost)."""
        mods: list[nn.Module] = [*self.choices().values(), self.curve, self.detail, self.detail_display, self.shading]
        mods += [m for m in (self.bilateral, self.shrinkage) if m is not None]
        return [p for m in mods for p in m.parameters()] + [self.nr_log_var]

    def probe_parameters(self) -> list[nn.Parameter]:
        """What the structure probe trains: the learnt structure but the lens shading, whose radius
        is the frame's, which the probe's centre crops are not."""
        shading = {id(p) for p in self.shading.parameters()}
        return [p for p in self.structure_parameters() if id(p) not in shading]

    def _noise(self, index: Tensor, shape: tuple[int, int], like: Tensor) -> tuple[NoiseTables, NoiseTables]:
        """The unit-variance noise tables of each sample's noise type, on planes of `shape`, for the
        bior1.5 and the DCT stage. A PSD depends on the plane size, so they are cached per shape."""
        if shape not in self._noise_tables:
            assert self.noise_types is not None
            psds = [noise_psd(t, 1.0, shape) for t in self.noise_types]
            self._noise_tables[shape] = tuple(  # type: ignore[assignment]
                NoiseTables.stack([noise_tables(p, name) for p in psds], like) for name in ("bior1.5", "dct")
            )
        return tuple(  # type: ignore[return-value]
            NoiseTables(t.coloured.to(like.device)[index], t.white.to(like.device)[index])
            for t in self._noise_tables[shape]
        )

    def cache_denoiser(self, cache: OutputCache | None) -> None:
        """Freeze the collaborative filter's two learnt noise scales and keep its outputs in
        `cache` wherever no gradient has to pass through it (None: stop caching; the scales stay
        as they are). Proxy training does this after the structure probe, which learns the scales:
        each sample is then filtered once per run instead of once per epoch. A predictor, which
        needs the gradient to the knobs, always runs the filter itself."""
        if cache is not None:
            self.nr_log_var.requires_grad_(False)
        self.denoise_cache = cache

    def _collaborative(self, planes: Tensor, u: Tensor) -> Tensor:
        """BM3D's collaborative filtering (collaborative.py) on the packed planes, with the knobs
        wired in: the noise type picks the PSD, noise-var scales it, and filter-strength,
        lambda-thr3d and mu2 act where bm3d applies them."""
        knobs = self.values.pick(self.values(u), NR)
        cache = self.denoise_cache
        needs_grad = torch.is_grad_enabled() and (
            planes.requires_grad or knobs.requires_grad or self.nr_log_var.requires_grad
        )
        if cache is None or needs_grad:
            return self._filter(planes, knobs)
        keys = [digest(planes[i], knobs[i], self.nr_log_var) for i in range(len(planes))]
        with torch.no_grad():
            return cache.batch(keys, lambda i: self._filter(planes[i : i + 1], knobs[i : i + 1]))

    def _filter(self, planes: Tensor, knobs: Tensor) -> Tensor:
        strength, kind, noise_var, lam, mu2 = knobs.unbind(1)
        assert self.noise_types is not None
        index = (kind.detach() * len(self.noise_types)).long().clamp(0, len(self.noise_types) - 1)
        noise = self._noise(index, tuple(planes.shape[-2:]), planes)  # type: ignore[arg-type]
        variance = noise_var * self.noise_var_scale
        scale = self.nr_log_var.exp()
        return collaborative_denoise(planes, noise, (variance * scale[0], variance * scale[1]), lam, mu2, strength)

    def _by_law(self, block: KnobLaw | None, planes: Tensor, u: Tensor) -> Tensor:
        """A denoiser whose settings are a learnt law of the noise-reduction knobs."""
        assert block is not None
        idx = self.nr_knobs
        v = self.values(u)
        return block(planes, knob_features(v[:, idx], self.values.lo[idx], self.values.hi[idx], u[:, idx]))

    def denoise(self, mosaic: Tensor, cfa: Tensor, u: Tensor) -> Tensor:
        """The learnt choice of denoiser on the packed mosaic, clipped to [0, 1] as an ISP does."""
        if self.denoiser is None:
            return mosaic
        planes = blocks.pack4(mosaic, cfa)
        out = self.denoiser({"collaborative": lambda: self._collaborative(planes, u),
                             "bilateral": lambda: self._by_law(self.bilateral, planes, u),
                             "shrinkage": lambda: self._by_law(self.shrinkage, planes, u)})  # fmt: skip
        return blocks.unpack4(out, cfa).clamp(0, 1)

    def _demosaic(self, mosaic: Tensor, masks: Tensor) -> Tensor:
        return self.demosaic_from({"declared": lambda: self.demosaicker(mosaic, masks),
                                   "edge-directed": lambda: self.edge_demosaicker(mosaic, masks)})  # fmt: skip

    def develop(self, denoised: Tensor, cfa: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The blocks after the denoiser -> (display-encoded image before JPEG, linear RGB before
        sharpening and tone). Separate from `denoise` so a denoised mosaic from elsewhere (the ISP's
        own, in the error budget) can be developed exactly as the proxy develops its own."""
        v = self.values(u)
        masks = blocks.site_masks(cfa, *denoised.shape[-2:])
        denoised = self.shading(denoised, masks)
        wb = self.values.pick(v, WB) if self.use_wb else None
        ccm = self.values.pick(v, CCM).view(-1, 3, 3) if self.use_ccm else None

        def gains_first() -> Tensor:
            x = blocks.white_balance(denoised, masks, wb[:, :3], wb[:, 3]) if wb is not None else denoised
            rgb = self._demosaic(x, masks)
            return blocks.color_matrix(rgb, ccm) if ccm is not None else rgb

        def matrix_first() -> Tensor:
            rgb = self._demosaic(denoised, masks)
            rgb = blocks.color_matrix(rgb, ccm) if ccm is not None else rgb
            return (rgb * (wb[:, :3] * wb[:, 3:])[:, :, None, None]).clamp(0, 1) if wb is not None else rgb

        if self.order is None:
            rgb = self._demosaic(denoised, masks)
        else:
            rgb = self.order({"gains-first": gains_first, "matrix-first": matrix_first})
        if self.sharpen_at is None:
            return self.display_mix(self.curve(rgb)), rgb
        usm = self.values.pick(v, USM)

        def sharpen(x: Tensor, mix: DetailMix) -> Tensor:
            radii = zip(DetailMix.SCALES, self.usm_radii, strict=True)
            return mix(x, [blocks.gaussian_blur(x, c * usm[:, 1], r) for c, r in radii], usm[:, 0])

        display = self.sharpen_at({"linear": lambda: self.curve(sharpen(rgb, self.detail)),
                                   "display": lambda: sharpen(self.curve(rgb), self.detail_display)})  # fmt: skip
        return self.display_mix(display), rgb

    def compress(self, display: Tensor) -> Tensor:
        """JPEG as libjpeg does it (`blocks.jpeg`, 40-46 dB from Pillow's) in the forward pass; in
        the backward pass, the gradient of its chroma subsampling alone.

        Why: quantisation is a staircase, so its true gradient is zero almost everywhere and any
        surrogate is a guess. Its error enters here as a constant, so the proxy's output carries the
        device's compression noise (1.4 dB of held-out fidelity over modelling chroma alone) while an
        optimiser through the proxy sees the smooth part only.
        """
        smooth = blocks.chroma_subsample(display, self.subsampling)
        if self.jpeg_quality <= 0:
            return smooth
        return smooth + (blocks.jpeg(display, self.jpeg_quality, self.subsampling) - smooth).detach()

    def structural(self, mosaic: Tensor, cfa: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(output of the declared blocks alone, compression included; linear RGB before tone):
        what the proxy knows before it has learnt anything."""
        display, linear = self.develop(self.denoise(mosaic, cfa, u), cfa, u)
        return self.compress(display), linear

    def with_blocks(self, mosaic: Tensor, cfa: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(the proxy's output, its declared blocks' output alone): one pass gives both, so an
        error budget costs no second run of the denoiser."""
        _check(mosaic, self.config.depth)
        display, linear = self.structural(mosaic, cfa, u)
        return display + self.residual(torch.cat([display, linear, mosaic], 1), emb=self.embed(u)), display

    def forward(self, mosaic: Tensor, cfa: Tensor, u: Tensor) -> Tensor:
        return self.with_blocks(mosaic, cfa, u)[0]


def _check(mosaic: Tensor, depth: int) -> None:
    h, w = mosaic.shape[-2:]
    if h % 2 ** (depth - 1) or w % 2 ** (depth - 1):
        raise ValueError(f"patch {h}x{w} must be divisible by {2 ** (depth - 1)} for depth {depth}")


def build_proxy(profile: Profile, config: ProxyConfig) -> nn.Module:
    if config.kind == "greybox":
        return GreyboxProxy(profile, config)
    if config.kind == "unet":
        return UNetProxy(profile, config)
    raise ValueError(f"unknown proxy kind {config.kind!r}; known: {', '.join(KINDS)}")
