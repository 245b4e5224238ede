"""Attention-aware per-image parameter predictor.

After the "multi-attention" idea of Qin et al. (ECCV 2022), in our own form:

1. A small CNN encodes the packed RAW (4 Bayer planes, resampled to `input_size`) into a grid of
   spatial feature tokens with learned position embeddings, plus one global token (mean-pooled),
   so exposure-like statistics are always in view.
2. One learned query token per parameter attends over those tokens (cross-attention): each
   parameter looks at the image regions that matter for it; gains look at neutral and bright
   areas, the denoiser at flat, noisy ones. The attention weights are kept for inspection.
3. The parameter tokens attend to each other (self-attention): parameters interact (gains and
   the colour matrix share one colour budget; denoise and sharpening pull opposite ways).
4. Global statistics of the frame (`_global_stats`: the cast, the exposure, the noise level),
   standardised over the training images, join the tokens and also reach every parameter's
   logit through a linear path that starts at zero. Without them the network, trained through
   the proxy for a few hundred steps, settled on one setting for every image.
5. Each token gives its encoded value through a sigmoid, scaled into the sampling region of the
   dataset the proxy was trained on: outside it the proxy was never taught, and a predictor would
   happily exploit its extrapolation.

About 0.14 M parameters at the defaults: about a millisecond per 256x256 preview on a CPU core,
small enough for the live loop.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom
from torch import Tensor, nn


def _area_resize(x: Tensor, size: int) -> Tensor:
    """Area resampling to size x size. An exact integer factor is a plain average pool: the same
    means as adaptive pooling's, at a fraction of its cost on the live loop's latency path."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h % size == 0 and w % size == 0:
        return F.avg_pool2d(x, (h // size, w // size))
    return F.adaptive_avg_pool2d(x, size)


@dataclass(frozen=True)
class PredictorConfig:
    dim: int = 64
    heads: int = 4
    self_layers: int = 2
    input_size: int = 64  # packed planes are resampled to this (the RAW is twice that)
    grid: int = 8  # spatial tokens per side
    stats: bool = True  # the planes' global statistics (`_global_stats`) as a token and a direct path

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PredictorConfig:
        """A run's recorded config; runs saved before a field existed were built without it."""
        return cls(**{"stats": False, **d})


N_STATS = 16
SIGMA_FLOOR = 1e-4  # a noiseless frame (a rendered scene, a test pattern) reads as this quiet
STATS_BOUND = 12.0  # standardised statistics are clipped to +-this: a frame unlike every training
# image (the board emulator's noiseless frames read -22) must not drown the image tokens; over the
# benchmark's training crops, all 40 epochs, the largest is 10.1.


def _global_stats(x: Tensor) -> Tensor:
    """(B, 4, h, w) linear planes -> (B, 16) classic estimates of what a camera did to the frame.

    Colour (15): per plane the log of its mean (grey world), of its 6-norm (shades of grey) and of
    its maximum (white patch), each less its mean over the planes (the cast, which white balance
    and the colour matrix undo), and those three means (exposure). Noise (1): the log of the
    median absolute diagonal detail of 2 x 2 blocks (Donoho's robust sigma) of the planes' square
    roots, where shot noise hardly depends on the signal; with the exposure it gives the
    shot and read noise apart. (One median: it is the statistics' main cost on the live path.)
    Why hand them over: a network trained through the proxy for a few hundred steps settled on one
    setting for every image (its outputs varied by under 2 % of the region across the benchmark's
    held-out crops; denoise off for all), although the right denoise depends on the noise level
    and the right gains on the cast. These are global ratios and medians, which convolutions,
    GELUs and per-token layer norms pass on only indirectly.
    """
    x = x.clamp(min=0)
    flat = x.flatten(2)
    cube = flat * flat * flat  # x ** 6 as a square of cubes: a third of pow's time
    logs = torch.stack([flat.mean(-1), cube.square().mean(-1).pow(1 / 6), flat.amax(-1)], 1).clamp(min=1e-6).log()
    centre = logs.mean(-1, keepdim=True)
    sigma = _robust_sigma(torch.sqrt(x + 1e-4)).clamp(min=SIGMA_FLOOR).log().mean(-1, keepdim=True)
    return torch.cat([(logs - centre).flatten(1), centre.flatten(1), sigma], 1)


def _robust_sigma(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C): noise sigma from the diagonal detail of 2 x 2 blocks, which flat
    regions and smooth gradients leave at zero; the median ignores edges."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    d = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return d.abs().flatten(2).median(-1).values / 0.6745


class AttentionPredictor(nn.Module):
    def __init__(self, n_params: int, lower: list[float], upper: list[float], config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.float32))
        self.register_buffer("upper", torch.tensor(upper, dtype=torch.float32))
        self.encoder = nn.Sequential(
            nn.Conv2d(4, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 48, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(48, d, 3, stride=1, padding=1), nn.GELU(),
        )  # fmt: skip
        self.pos = nn.Parameter(torch.randn(1, config.grid * config.grid, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, n_params, d) * 0.02)
        self.cross = nn.MultiheadAttention(d, config.heads, batch_first=True)
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.interact = nn.TransformerEncoder(layer, config.self_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 1)
        self.stats: nn.Module | None = None
        self.direct: nn.Module | None = None
        if config.stats:
            # Standardised over training images (`fit_stats`): across images the statistics vary
            # by a few tenths of their size, and it is that variation the setting must follow.
            self.register_buffer("stats_shift", torch.zeros(N_STATS))
            self.register_buffer("stats_scale", torch.ones(N_STATS))
            self.stats = nn.Sequential(nn.Linear(N_STATS, d), nn.GELU(), nn.Linear(d, d))
            # Standardised statistics -> every parameter's logit, starting at zero: a linear path
            # on which the setting can follow the frame from the first steps, not only through
            # attention over tokens whose differences between images are small.
            self.direct = nn.Linear(N_STATS, n_params)
            nn.init.zeros_(self.direct.weight)
            nn.init.zeros_(self.direct.bias)
        self.last_attention: Tensor | None = None

    def tokens(self, packed: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image tokens for attention, and the standardised statistics when the model has them."""
        linear = _area_resize(packed, self.config.input_size)
        # Log-ish compression: RAW is linear; exposure differences should not swamp structure.
        x = torch.sqrt(linear.clamp(min=0) + 1e-4)
        feat = _area_resize(self.encoder(x), self.config.grid)  # (B, d, g, g)
        spatial = feat.flatten(2).transpose(1, 2) + self.pos
        tokens = [spatial, spatial.mean(1, keepdim=True)]
        stats = None
        if self.stats is not None:
            stats = ((_global_stats(packed) - self.stats_shift) / self.stats_scale).clamp(-STATS_BOUND, STATS_BOUND)
            tokens.append(self.stats(stats).unsqueeze(1))
        return torch.cat(tokens, 1), stats

    @torch.no_grad()
    def fit_stats(self, packed: Tensor) -> None:
        """Standardise the global statistics by their mean and spread over `packed` (N, 4, h, w),
        a sample of the training images; a no-op for a model without them."""
        if self.stats is None:
            return
        s = _global_stats(packed)
        self.stats_shift.copy_(s.mean(0))
        self.stats_scale.copy_(s.std(0).clamp(min=1e-3))

    def forward(self, packed: Tensor) -> Tensor:
        """(B, 4, h, w) packed RAW in [0, 1] -> (B, P) encoded parameters inside the region box."""
        tokens, stats = self.tokens(packed)
        kv = self.norm_kv(tokens)
        q = self.queries.expand(len(packed), -1, -1)
        attended, weights = self.cross(self.norm_q(q), kv, kv, need_weights=True)
        self.last_attention = weights.detach()  # (B, P, tokens): where each parameter looked
        logits = self.head(self.interact(q + attended)).squeeze(-1)
        if stats is not None and self.direct is not None:
            logits = logits + self.direct(stats)
        unit = torch.sigmoid(logits)
        return self.lower + unit * (self.upper - self.lower)


def input_side(model: nn.Module, preview: int) -> int:
    """Side of the packed planes to hand `model` for a preview x preview frame: the predictor's own
    input size when it is smaller (it would only shrink them again), else the preview's half.
    A wrapper that exposes its predictor's `config` counts as that predictor."""
    config = getattr(model, "config", None)
    if isinstance(config, PredictorConfig):
        return min(preview // 2, config.input_size)
    return preview // 2


class _ChannelsLast(nn.Module):
    """Runs the encoder's convolutions in channels-last layout, which oneDNN takes for the strided
    ones too (in NCHW they fall back to torch's slow path): 0.67 against 0.80 ms per preview."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def for_latency(model: nn.Module, example: Tensor) -> Callable[[Tensor], Tensor]:
    """The predictor as a frozen TorchScript graph for inputs shaped like `example`, for the live loop.

    Why: at one packed preview the network is a few dozen small ops, and Python's module dispatch
    around them costs more than their arithmetic. On this 2-core machine, back to back, on the
    same 128x128 planes: 1.44 ms eager, 0.88 ms traced and frozen; on the 64x64 planes the live loop
    now hands it, channels-last: 0.67 ms (1.2-1.3 against 2.2 ms eager after 15 ms idle, the live
    loop's case). Only an `AttentionPredictor` is traced (its forward has no data-dependent Python
    branches); anything else, or a trace whose output differs from eager, runs as it is.
    `last_attention` is not updated by the traced graph.
    """
    if type(model) is not AttentionPredictor:
        return model
    model.eval()
    probe = torch.rand_like(example)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the shape checks, fixed by `example`
        try:
            graph = torch.jit.freeze(torch.jit.trace(_ChannelsLast(model).eval(), (example,), check_trace=False))
            same = torch.allclose(graph(probe), model(probe), atol=1e-5, rtol=1e-4)
        except (RuntimeError, torch.jit.Error):
            return model
    return graph if same else model
