"""ISP speed: ms per 512x512 patch for each block and the whole pipeline, the bare bm3d call on the same
patch, and megapixels per second of rawpy's postprocess beside ours (noise reduction off) on a real RAW.

Writes benchmarks/results/isp.json and prints a table. Compare ratios within one run: the machine is
shared and noisy. Usage: python benchmarks/isp.py [--repeats N] [--bm3d-repeats N] [--raw FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import bm3d
import numpy as np
import rawpy
from provenance import header

from hil_tune.inputs import bundled_frame
from hil_tune.isp import SyntheticISP
from hil_tune.isp.denoise import bm3d_profile, noise_psd
from hil_tune.profiles import load_profile
from hil_tune.raw import pack4, read_raw

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = ROOT.parent / "shared" / "data" / "raw" / "colorchart_Canon550D_ML.dng"


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--bm3d-repeats", type=int, default=3)
    raw_env = os.environ.get("HIL_TUNE_RAW_DIR")
    ap.add_argument("--raw", type=Path, default=Path(raw_env) / DEFAULT_RAW.name if raw_env else DEFAULT_RAW)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "isp.json")
    args = ap.parse_args()

    profile = load_profile("synthetic")
    isp = SyntheticISP(profile)
    params = profile.space.defaults()
    no_nr = dict(params, **{"filter-strength": 0.0})
    patch = bundled_frame("astronaut").center_crop(512, 512)
    mosaic, cfa = patch.normalized(), patch.cfa

    # Per block: the stage timings of repeated runs as `run` renders them (reused scratch), median per block.
    block_ms: dict[str, float] = {}
    runs = [isp.stages(mosaic, cfa, no_nr, scratch=True).seconds for _ in range(args.repeats)]
    for name in runs[0]:
        if name != "denoise":
            block_ms[name] = 1000 * statistics.median(r[name] for r in runs)
    non_denoise_ms = 1000 * median_seconds(lambda: isp.run(mosaic, cfa, no_nr), args.repeats)

    # Denoise block, full pipeline with NR on, and the bare bm3d call on the same packed planes.
    pl = profile.pipeline
    packed = pack4(mosaic, cfa).astype(np.float64)
    psd = noise_psd(str(params["noise-type"]), float(params["noise-var"]) * pl.noise_var_scale, packed.shape[:2])
    bprof = bm3d_profile(
        filter_strength=float(params["filter-strength"]), lambda_thr3d=float(params["lambda-thr3d"]),
        mu2=float(params["mu2"]), base=pl.bm3d_profile, threads=pl.bm3d_threads,
    )  # fmt: skip
    bare_ms = 1000 * median_seconds(lambda: bm3d.bm3d(packed, psd, bprof), args.bm3d_repeats)
    dn_runs = [isp.stages(mosaic, cfa, params).seconds for _ in range(args.bm3d_repeats)]
    block_ms["denoise"] = 1000 * statistics.median(r["denoise"] for r in dn_runs)
    pipeline_ms = 1000 * statistics.median(sum(r.values()) for r in dn_runs)

    # Real RAW: rawpy's own postprocess vs our pipeline without noise reduction, same file.
    raw_cmp: dict[str, object] = {"file": None}
    if args.raw.is_file():
        frame = read_raw(args.raw)
        norm = frame.normalized()
        with rawpy.imread(str(args.raw)) as raw:
            raw.postprocess()  # warm-up, both sides
            isp.run_frame(frame, no_nr)
            # Interleaved, so that a burst of load on this shared machine hits both sides alike.
            pp_times, ours_times = [], []
            for _ in range(args.repeats):
                pp_times.append(median_seconds(raw.postprocess, 1))
                # black/white levels included, as postprocess does them too
                ours_times.append(median_seconds(lambda: isp.run_frame(frame, no_nr), 1))
            pp_s, ours_s = statistics.median(pp_times), statistics.median(ours_times)
            pp_mp = raw.sizes.width * raw.sizes.height / 1e6
        ours_mp = norm.size / 1e6
        raw_cmp = {
            "file": args.raw.name,
            "rawpy_postprocess_mp_per_s": pp_mp / pp_s,
            "ours_no_nr_mp_per_s": ours_mp / ours_s,
            "ours_over_rawpy": (ours_mp / ours_s) / (pp_mp / pp_s),
        }

    result = {
        **header("isp"),
        "patch": "512x512 unprocessed skimage astronaut, default parameters",
        "repeats": args.repeats,
        "bm3d_repeats": args.bm3d_repeats,
        "bm3d_threads": pl.bm3d_threads,
        "block_ms": block_ms,
        "non_denoise_blocks_ms": non_denoise_ms,
        "pipeline_ms": pipeline_ms,
        "bare_bm3d_ms": bare_ms,
        "pipeline_over_bare_bm3d": pipeline_ms / bare_ms,
        "real_raw": raw_cmp,
        "targets": {
            "non_denoise_at_least_rawpy_speed": raw_cmp.get("ours_over_rawpy", 0) >= 1.0,  # type: ignore[operator]
            "pipeline_within_10pct_of_bm3d": pipeline_ms / bare_ms <= 1.10,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'block':<16}{'ms / 512x512':>14}")
    for name, ms in block_ms.items():
        print(f"{name:<16}{ms:>14.1f}")
    print(f"{'all but denoise':<16}{non_denoise_ms:>14.1f}")
    print(
        f"{'pipeline (NR on)':<16}{pipeline_ms:>14.1f}   bare bm3d {bare_ms:.1f} ms  ratio {pipeline_ms / bare_ms:.3f}"
    )
    if raw_cmp["file"]:
        print(
            f"{raw_cmp['file']}: rawpy postprocess {raw_cmp['rawpy_postprocess_mp_per_s']:.1f} MP/s, "
            f"ours (no NR) {raw_cmp['ours_no_nr_mp_per_s']:.1f} MP/s, ratio {raw_cmp['ours_over_rawpy']:.2f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
