"""`hil-tune live`: the predictor drives a device frame by frame."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from hil_tune.cli_common import driver_profile, err, open_options, out
from hil_tune.errors import InputError
from hil_tune.ui import frame_strip, live_label


def register(app: typer.Typer) -> None:
    app.command("live")(live)


def live(
    driver: Annotated[str, typer.Option("--driver", help="Driver name.")],
    predictor: Annotated[Path, typer.Option("--predictor", help="Predictor run folder.")],
    device: Annotated[str | None, typer.Option("--device", help="Port, serial number or index.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Device profile (default: the driver's).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE.")] = None,
    frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    log: Annotated[Path | None, typer.Option(help="JSON-lines log, one row per frame.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Predict and log, push nothing.")] = False,
    preview: Annotated[Path | None, typer.Option(help="GIF or PNG strip of frames with their parameters.")] = None,
    alpha: Annotated[float, typer.Option(help="Weight of the newest prediction in the average.")] = 0.5,
    threshold: Annotated[float, typer.Option(help="Encoded distance before a parameter is pushed again.")] = 0.02,
    max_push_hz: Annotated[float, typer.Option("--max-push-hz")] = 15.0,
    allow_restarts: Annotated[
        bool, typer.Option("--allow-restarts", help="Also push parameters that stop and restart the stream.")
    ] = False,
) -> None:
    """Capture, predict, push the changed parameters; restore the device's own settings on exit."""
    import threading

    from hil_tune.live import LiveLoop, LiveSettings, check_profiles
    from hil_tune.train.predictor_train import load_predictor

    if frames is None and seconds is None:
        frames = 300
    settings = LiveSettings(frames=frames, seconds=seconds, alpha=alpha, threshold=threshold,
                            max_push_hz=max_push_hz, dry_run=dry_run, allow_restarts=allow_restarts)  # fmt: skip
    # Outputs are checked before the session, not found unwritable after it ran.
    if log is not None and (log.is_dir() or not log.parent.is_dir()):
        raise InputError(f"--log {log}: must be a file in an existing folder")
    if preview is not None and (preview.suffix.lower() not in (".gif", ".png") or not preview.parent.is_dir()):
        raise InputError(f"--preview {preview}: must be a .gif or .png file in an existing folder")
    model, _, pred_profile = load_predictor(predictor)
    cls, options = open_options(driver, device, option or [], 10.0)
    dev_profile = driver_profile(cls, profile)
    check_profiles(pred_profile, dev_profile)  # before the device is opened (LiveLoop checks again)
    drv = cls(dev_profile, **options)
    kept: list[tuple[np.ndarray, str]] = []
    every = max(1, (frames or 300) // 16)

    def on_frame(frame: Any, row: dict[str, Any]) -> None:
        if preview is not None and row["frame"] % every == 0 and len(kept) < 16:
            kept.append((frame.image, f"#{row['frame']} {live_label(frame.params)}"))

    loop = LiveLoop(drv, model, pred_profile, settings, log=log, on_frame=on_frame)
    stop_now = threading.Event()

    def request_stop(*_: object) -> None:
        loop.stop.set()
        stop_now.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    with err.status("live: capture -> predict -> push (Ctrl-C stops and restores the device)"):
        summary = loop.run()
    _print_summary(summary.as_dict())
    if preview is not None and kept:
        frame_strip(kept, preview)
        out.print(f"wrote {preview}")
    if log is not None:
        out.print(f"log: {log}")


def _print_summary(s: dict[str, Any]) -> None:
    """What a live session did: counts, per-stage latency percentiles, what it could not do."""
    lat = s["latency_ms"]
    out.print(f"{s['frames']} frames in {s['seconds']:.1f} s ({s['fps']:.1f} fps); {s['pushes']} pushes "
              f"({s['pushed_params']} values), {s['skipped_in_flight']} skipped in flight, {s['rate_limited']} "
              f"rate-limited, {s['bad_predictions']} bad predictions kept the last good, {s['faults']} faults "
              f"({s['gap_seconds']:.2f} s without frames)")  # fmt: skip
    for k, label in (("capture", "capture"), ("predict", "predict"), ("quantize", "quantize"), ("push", "push"),
                     ("frame_to_applied", "frame -> applied (predict + quantize + push)")):  # fmt: skip
        if lat[k]["n"]:
            out.print(f"  {label:9} p50 {lat[k]['p50']:7.2f} ms   p99 {lat[k]['p99']:7.2f} ms")
    if s["held"]:
        out.print(f"  held at their value (pushing them restarts the stream; --allow-restarts): {', '.join(s['held'])}")
    if s["bytes_per_push"] is not None:
        out.print(f"  bytes per push (median, both directions): {s['bytes_per_push']:.0f}")
    if s["restore_error"]:
        err.print(f"[red]could not restore the device's parameters:[/] {s['restore_error']}")
