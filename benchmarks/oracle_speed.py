"""The per-image oracle's wall time on the built-in ISP's worker pool: CMA-ES that hands the pool one
setting at a time (how `optimise` rendered until 2026-12-04) against one whole generation per call
(how it renders now). Same settings and losses either way (the search is deterministic); only the
time differs, because one image's setting is one render and a pool of N workers then idles N - 1.

Configuration: bundled photos at 128 px (the evaluation's crop), CMA-ES budget 24 per image
(three generations of 8), the synthetic firmware, as many workers as cores. Both modes run in this
one process, on the same pool, in alternating order. Writes benchmarks/results/oracle_speed.json.
Usage: python benchmarks/oracle_speed.py [--images 3] [--budget 24] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from provenance import header

from hil_tune.profiles import load_profile
from hil_tune.train.predictor_eval import optimise, reference_frame
from hil_tune.train.renderers import BuiltinRenderer, Job

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("bundled:coffee", "bundled:chelsea", "bundled:astronaut", "bundled:rocket")


class OneAtATime:
    """The pool as the old search used it: one render call per setting."""

    def __init__(self, inner: BuiltinRenderer) -> None:
        self.inner, self.calls = inner, 0

    def render(self, jobs: list[Job], names: list[str] | None = None) -> list[np.ndarray]:
        self.calls += len(jobs)
        return [self.inner.render([job])[0] for job in jobs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    profile = load_profile("synthetic")
    workers = os.cpu_count() or 1
    box = profile.get_region("plausible")
    lower, upper = np.asarray(box.lower), np.asarray(box.upper)
    isp = BuiltinRenderer(profile, "synthetic", workers)
    seconds: dict[str, list[float]] = {"one setting per call": [], "one generation per call": []}
    found: dict[str, list[float]] = {k: [] for k in seconds}
    try:
        warm = reference_frame(IMAGES[0], profile, args.size)[0]
        isp.render([(warm, profile.space.defaults())] * workers)  # start every worker before timing
        for i, source in enumerate(IMAGES[: args.images]):
            frame, ref = reference_frame(source, profile, args.size)
            x0 = profile.space.encode(profile.space.defaults())
            order = [("one setting per call", OneAtATime(isp)), ("one generation per call", isp)]
            for name, renderer in order if i % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                _, loss = optimise(renderer, profile, [(frame, ref)], lower, upper, args.budget, x0, seed=0)
                seconds[name].append(time.perf_counter() - t)
                found[name].append(loss)
    finally:
        isp.close()
    if found["one setting per call"] != found["one generation per call"]:
        print("the two modes found different losses: the batched search is not the same search")
        return 1
    total = {k: sum(v) for k, v in seconds.items()}
    out = {
        **header("oracle_speed"),
        "config": {
            "images": list(IMAGES[: args.images]),
            "budget": args.budget,
            "size": args.size,
            "workers": workers,
            "firmware": "synthetic",
        },
        "seconds_per_image": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
        "seconds_total": {k: round(v, 2) for k, v in total.items()},
        "speedup": round(total["one setting per call"] / total["one generation per call"], 2),
        "losses": found["one generation per call"],
    }
    path = ROOT / "benchmarks" / "results" / "oracle_speed.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'mode':26} {'s per image':>12}")
    for k, v in total.items():
        print(f"{k:26} {v / len(seconds[k]):12.1f}")
    print(f"speed-up {out['speedup']}x on {workers} workers (same losses); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
