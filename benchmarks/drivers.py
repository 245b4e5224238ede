"""Driver latency: a full push with verify, a 2-parameter delta push, and a capture, per driver;
bytes on the wire per push on the serial link and the time those bytes take at 115200 and 921600 baud.

Drivers run against their no-hardware backends: sim in-process, serial over the emulator's pty,
usb over the emulated pyusb backend, genicam on viky.cti (whose profile has 3 parameters, so its
"full" push is 3). Denoise is off at power-on so a capture measures the driver, not bm3d.
Writes benchmarks/results/drivers.json and prints a table.
Usage: python benchmarks/drivers.py [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from provenance import header
from rigs import rig

ROOT = Path(__file__).resolve().parents[1]
BAUDS = (115200, 921600)


def stats(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def full_sets(space) -> tuple[dict, dict]:
    """Two parameter sets that differ in every parameter (so every value is written each time)."""
    a, b = {}, {}
    for spec in space:
        values = spec.values()
        a[spec.name], b[spec.name] = values[len(values) // 3], values[2 * len(values) // 3]
    return a, b


def measure(kind: str, repeats: int, tmp: Path) -> dict:
    with rig(kind, tmp) as r, r.driver as drv:
        a, b = full_sets(drv.space)
        names = ["frame-rate", "ball-size"] if kind == "genicam" else ["gain-r", "ccm01"]
        link = getattr(drv, "link", None)
        out: dict = {"params_in_full_push": len(a)}
        delta = ({k: a[k] for k in names}, {k: b[k] for k in names})
        for label, sets in (("full_push", (a, b)), ("delta_push", delta)):
            drv.set_params(sets[1])
            times, tx, rx = [], [], []
            for i in range(repeats):
                before = (link.tx_bytes, link.rx_bytes) if link is not None else (0, 0)
                t = time.perf_counter()
                drv.set_params(sets[i % 2], verify=True)
                times.append(time.perf_counter() - t)
                if link is not None:
                    tx.append(link.tx_bytes - before[0])
                    rx.append(link.rx_bytes - before[1])
            out[label] = stats(times)
            if kind == "serial":
                bytes_ = int(np.median(tx)) + int(np.median(rx))
                out[label] |= {"bytes_out": int(np.median(tx)), "bytes_in": int(np.median(rx))}
                out[label] |= {f"wire_ms_at_{b}": round(bytes_ * 10 / b * 1000, 3) for b in BAUDS}
        if "filter-strength" in drv.space:
            drv.set_params({"filter-strength": 0.0})  # the sweep above left bm3d on; time the driver
        drv.capture()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            frame = drv.capture()
            times.append(time.perf_counter() - t)
        out["capture"] = stats(times) | {"frame": "x".join(map(str, frame.image.shape))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drivers.json")
    args = ap.parse_args()
    results = {}
    for kind in ("sim", "serial", "usb", "genicam"):
        with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(KeyboardInterrupt):
            repeats = min(args.repeats, 60) if kind == "genicam" else args.repeats
            results[kind] = measure(kind, repeats, Path(tmp))
    result = {
        **header("drivers"),
        "repeats": args.repeats,
        "notes": "sim in-process; serial over a pty to the emulated board; usb over the emulated pyusb backend; "
        "genicam on viky.cti (3 parameters; a width change stops and restarts the stream; capture waits for "
        "the next frame of the camera). "
        "Wire time = bytes x 10 bits (8N1) / baud. Serial bytes count both directions.",
        "drivers": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'driver':8} {'full push p50/p99 ms':>22} {'delta push p50/p99 ms':>23} {'capture p50/p99 ms':>20}")
    for kind, r in results.items():
        cols = [f"{r[k]['median_ms']:.2f}/{r[k]['p99_ms']:.2f}" for k in ("full_push", "delta_push", "capture")]
        print(f"{kind:8} {cols[0]:>22} {cols[1]:>23} {cols[2]:>20}")
    s = results["serial"]
    for k in ("full_push", "delta_push"):
        print(f"serial {k}: {s[k]['bytes_out']} B out + {s[k]['bytes_in']} B in; "
              + ", ".join(f"{s[k][f'wire_ms_at_{b}']} ms at {b} baud" for b in BAUDS))  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
