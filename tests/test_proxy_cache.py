"""The grey-box's denoiser cache: the same outputs as the filter itself, bypassed wherever a
gradient has to pass through it, keyed by content, bounded, and a training run that uses it stays
deterministic and resumable."""

from __future__ import annotations

import torch

from hil_tune.inputs import bundled_frame
from hil_tune.models.isp_blocks import CFAS
from hil_tune.models.output_cache import OutputCache
from hil_tune.models.proxy import GreyboxProxy, ProxyConfig


def _batch(profile, n=3, size=32):
    frames = [bundled_frame(name).center_crop(size, size) for name in ("chelsea", "coffee", "astronaut")[:n]]
    mosaic = torch.stack([torch.from_numpy(f.normalized())[None] for f in frames])
    cfa = torch.tensor([CFAS.index(f.cfa) for f in frames])
    u = torch.tensor(profile.space.sample_lhc(n, seed=3, region=profile.get_region("plausible")), dtype=torch.float32)
    u[:, profile.space.names.index("filter-strength")] = 0.5  # the filter on for every sample
    return mosaic, cfa, u


def _model(profile):
    torch.manual_seed(0)
    model = GreyboxProxy(profile, ProxyConfig(width=8, depth=2))
    model.fix_standard()  # the collaborative filter alone decides the denoised mosaic
    return model.eval()


def test_cached_outputs_equal_the_filter_and_are_read_back(synthetic):
    mosaic, cfa, u = _batch(synthetic)
    model = _model(synthetic)
    with torch.no_grad():
        plain = model.denoise(mosaic, cfa, u)
    cache = OutputCache()
    model.cache_denoiser(cache)
    assert not model.nr_log_var.requires_grad  # frozen: the cached numbers stay true
    with torch.no_grad():
        cold = model.denoise(mosaic, cfa, u)
        assert (cache.misses, cache.hits, len(cache)) == (3, 0, 3)
        warm = model.denoise(mosaic, cfa, u)
        assert (cache.misses, cache.hits) == (3, 3)
        # Another sample order reads the same rows: keys are contents, not batch positions.
        order = torch.tensor([2, 0, 1])
        shuffled = model.denoise(mosaic[order], cfa[order], u[order])
    assert torch.equal(cold, warm) and torch.equal(shuffled, cold[order]) and cache.hits == 6
    # Computed one sample at a time instead of batched: the same up to float rounding.
    assert (cold - plain).abs().max() < 1e-5 and (plain - mosaic).abs().max() > 1e-3


def test_a_changed_knob_or_mosaic_is_a_miss(synthetic):
    mosaic, cfa, u = _batch(synthetic, n=1)
    model = _model(synthetic)
    model.cache_denoiser(cache := OutputCache())
    with torch.no_grad():
        first = model.denoise(mosaic, cfa, u)
        v = u.clone()
        v[0, synthetic.space.names.index("noise-var")] += 0.3
        louder = model.denoise(mosaic, cfa, v)
        brighter = model.denoise(mosaic * 0.9, cfa, u)
        model.cache_denoiser(None)
        truth = model.denoise(mosaic, cfa, v)
    assert cache.misses == 3 and cache.hits == 0
    assert not torch.equal(first, louder) and (louder - truth).abs().max() < 1e-5
    assert not torch.equal(brighter, first)


def test_a_gradient_through_the_filter_bypasses_the_cache(synthetic):
    """The predictor trains through the proxy: the knobs' gradient must come from the filter."""
    mosaic, cfa, u = _batch(synthetic, n=2)
    model = _model(synthetic)
    model.cache_denoiser(cache := OutputCache())
    u = u.clone().requires_grad_(True)
    model.denoise(mosaic, cfa, u).sum().backward()
    assert cache.misses == cache.hits == 0
    nr = [synthetic.space.names.index(n) for n in ("filter-strength", "noise-var", "lambda-thr3d", "mu2")]
    assert (u.grad[:, nr].abs().sum(0) > 0).all()


def test_the_budget_bounds_what_is_kept_not_what_is_returned(synthetic):
    mosaic, cfa, u = _batch(synthetic)
    model = _model(synthetic)
    one = 4 * 16 * 16 * 4  # four 16x16 float32 planes: one sample's packed mosaic
    model.cache_denoiser(cache := OutputCache(max_bytes=one))
    with torch.no_grad():
        first = model.denoise(mosaic, cfa, u)
        again = model.denoise(mosaic, cfa, u)
    assert len(cache) == 1 and cache.bytes == one and cache.hits == 1 and cache.misses == 5
    assert torch.equal(first, again)
