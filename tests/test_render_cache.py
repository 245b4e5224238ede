"""The render cache returns exactly what the ISP renders, counts every query asked for, renders a
setting once, survives across runs on disk, and never trusts a torn entry."""

from __future__ import annotations

import numpy as np

from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.profiles import load_profile
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer


def _setup():
    prof = load_profile("synthetic")
    frames = [load_source(s, prof, 0).center_crop(32, 32) for s in resolve_sources(["bundled:astronaut@2"])]
    a = prof.space.defaults()
    b = dict(a, **{"filter-strength": prof.space["filter-strength"].quantize(0.5)[0]})
    return prof, frames, a, b


def test_hits_equal_renders_and_queries_are_counted(tmp_path):
    prof, frames, a, b = _setup()
    plain = BuiltinRenderer(prof, "synthetic", 1)
    cached = CachedRenderer(BuiltinRenderer(prof, "synthetic", 1), tmp_path / "cache")
    try:
        jobs = [(frames[0], a), (frames[1], a), (frames[0], b), (frames[0], a)]
        want = plain.render(jobs)
        got = cached.render(jobs)
        assert all(np.array_equal(w, g) for w, g in zip(want, got, strict=True))
        assert (cached.calls, cached.renders) == (4, 3)  # the repeated job is rendered once
        again = cached.render(jobs[:2])
        assert all(np.array_equal(w, g) for w, g in zip(want[:2], again, strict=True))
        assert (cached.calls, cached.renders) == (6, 3)
        # two draws of one photo are two images: the second draw's render differs
        assert not np.array_equal(got[0], got[1])
    finally:
        plain.close()
        cached.close()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_a_later_run_reads_the_disk_and_re_renders_a_torn_entry(tmp_path):
    prof, frames, a, b = _setup()
    first = CachedRenderer(BuiltinRenderer(prof, "synthetic", 1), tmp_path)
    try:
        want = first.render([(frames[0], a), (frames[0], b)])
    finally:
        first.close()
    entries = sorted(tmp_path.glob("*.npy"), key=lambda p: p.stat().st_mtime)
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # a torn write from a crashed run
    second = CachedRenderer(BuiltinRenderer(prof, "synthetic", 1), tmp_path)
    try:
        got = second.render([(frames[0], a), (frames[0], b)])
    finally:
        second.close()
    assert all(np.array_equal(w, g) for w, g in zip(want, got, strict=True))
    assert second.renders == 1


def test_another_firmware_never_hits_the_cache(tmp_path):
    prof, frames, a, _ = _setup()
    syn = CachedRenderer(BuiltinRenderer(prof, "synthetic", 1), tmp_path)
    foreign = CachedRenderer(BuiltinRenderer(prof, "foreign", 1), tmp_path)
    try:
        x = syn.render([(frames[0], a)])[0]
        y = foreign.render([(frames[0], a)])[0]
    finally:
        syn.close()
        foreign.close()
    assert foreign.renders == 1 and not np.array_equal(x, y)
