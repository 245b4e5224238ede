"""`make demo`: the whole loop on the simulator and bundled data, small enough for a 2-core laptop.

Each step is a library call that a CLI command also makes (the README lists them), so a user can
rerun one step with bigger settings. Every step writes its artefacts under the output folder and
a line into summary.json; report.py turns that into report.html. A failing step raises: the demo
fails loudly rather than writing a report with holes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import TextColumn

from hil_tune.capture.dataset import DatasetFolder, DatasetReader
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.report import dataset_info, preview
from hil_tune.capture.sources import resolve_sources
from hil_tune.demo import render_bundled
from hil_tune.models.predictor import PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.profiles import load_profile
from hil_tune.train.predictor_eval import evaluate_predictor
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.proxy_eval import evaluate_proxy
from hil_tune.train.proxy_train import TrainConfig, train_proxy
from hil_tune.ui import frame_strip, live_label, progress


@dataclass
class DemoConfig:
    render_size: int = 192
    samples_per_source: int = 12
    patch: int = 64
    region: str = "plausible"
    workers: int = 2
    proxy_epochs: int = 15
    predictor_epochs: int = 20
    held_out_share: float = 0.34  # two of the six bundled photos are never trained on
    eval_size: int = 128  # held-out crops scored at the predictor benchmark's size (about a minute more than 64 px)
    expert_budget: int = 16
    oracle_budget: int = 8
    expert_images: int = 3
    # Sensitivity curves for the knobs people reach for first (each point costs an ISP run).
    sensitivity: tuple[str, ...] = (
        "filter-strength",
        "noise-var",
        "gain-r",
        "gain-b",
        "digital-gain",
        "ccm00",
        "usm-amount",
        "usm-sigma",
    )
    live_frames: int = 200
    seed: int = 0


def _step(console: Console, summary: dict[str, Any], name: str, what: str) -> float:
    console.rule(f"[bold]{name}[/]: {what}")
    summary.setdefault("steps", []).append({"name": name, "what": what})
    return time.perf_counter()


def _done(summary: dict[str, Any], t0: float, **facts: Any) -> None:
    summary["steps"][-1].update(seconds=round(time.perf_counter() - t0, 1), **facts)


def run_demo(out: Path, cfg: DemoConfig, console: Console) -> Path:
    """Every step in order, each a named function; the summary they fill becomes the report."""
    from hil_tune.report import write_report

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    summary: dict[str, Any] = {"config": asdict(cfg), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    _render_step(out, cfg, console, summary)
    _capture_step(out, cfg, console, summary)
    held = _proxy_step(out, cfg, console, summary)
    _predictor_step(out, cfg, console, summary, held)
    _live_step(out, cfg, console, summary, held[0])
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return write_report(out, summary)


def _render_step(out: Path, cfg: DemoConfig, console: Console, summary: dict[str, Any]) -> None:
    t = _step(
        console, summary, "render", "bundled photos (unprocessed to RAW) and HIL_TUNE_RAW_DIR files, default parameters"
    )
    sheet = render_bundled(out / "render", size=cfg.render_size, n_random=1, region=cfg.region, seed=cfg.seed)
    _done(
        summary,
        t,
        command=f"hil-tune demo render --out {out}/render --size {cfg.render_size} --random 1",
        artefacts={"contact_sheet": str(sheet.relative_to(out))},
    )


def _capture_step(out: Path, cfg: DemoConfig, console: Console, summary: dict[str, Any]) -> None:
    t = _step(console, summary, "capture", "Latin-hypercube sweep on the simulator")
    plan = build_plan(
        load_profile("synthetic"),
        resolve_sources(["bundled"]),
        samples_per_source=cfg.samples_per_source,
        patch=cfg.patch,
        region=cfg.region,
        seed=cfg.seed,
    )
    DatasetFolder(out / "sweep").create(plan)
    with progress(TextColumn("{task.fields[rate]}"), console=console) as bar:
        task = bar.add_task("capture", total=len(plan.rows), rate="")
        start = time.perf_counter()

        def on_progress(done: int, failed: int, total: int) -> None:
            bar.update(
                task, completed=done + failed, rate=f"{done / max(time.perf_counter() - start, 1e-9):.2f} samples/s"
            )

        result = run_capture(out / "sweep", CaptureSettings("sim"), workers=cfg.workers, on_progress=on_progress)
    if result.failed:
        raise RuntimeError(f"capture: {len(result.failed)} samples failed")
    reader = DatasetReader(out / "sweep")
    info = dataset_info(reader)
    (out / "sweep" / "info.json").write_text(json.dumps(info, indent=1))
    preview(reader, out / "sweep" / "preview.png", sources=6, per_source=6)
    _done(
        summary,
        t,
        command=f"hil-tune capture --driver sim --source bundled -m {cfg.samples_per_source} --patch "
        f"{cfg.patch} --region {cfg.region} --workers {cfg.workers} --out {out}/sweep",
        facts={
            "samples": result.written,
            "samples_per_s": round(result.written / result.seconds, 2),
            "median_clipped": info["clipped_share"]["median"],
        },
        artefacts={"preview": "sweep/preview.png", "info": "sweep/info.json"},
    )


def _proxy_step(out: Path, cfg: DemoConfig, console: Console, summary: dict[str, Any]) -> list[str]:
    """Train the proxy and measure it; returns the photos it held out (the predictor's too)."""
    t = _step(console, summary, "proxy", "train the grey-box proxy, then measure it against the ISP")
    tcfg = TrainConfig(
        epochs=cfg.proxy_epochs, batch=8, optimizer="adam", lr=1e-3, val_sources=cfg.held_out_share, seed=cfg.seed
    )
    with progress(TextColumn("{task.fields[info]}"), console=console) as bar:
        task = bar.add_task("proxy epochs", total=cfg.proxy_epochs, info="")

        def epoch_done(r: dict[str, Any]) -> None:
            bar.update(task, advance=1, info=f"unseen images {r['val_sources_psnr']:.2f} dB")

        final = train_proxy(
            out / "sweep", out / "proxy", load_profile("synthetic"), ProxyConfig(), tcfg, on_epoch=epoch_done
        )
    with console.status("fidelity report: sensitivity curves and rank agreement on the ISP"):
        rep = evaluate_proxy(
            out / "proxy",
            out / "sweep",
            out / "proxy" / "report",
            sensitivity_points=3,
            rank_sets=6,
            sensitivity_params=list(cfg.sensitivity),
        )
    _done(
        summary,
        t,
        command=f"hil-tune train proxy {out}/sweep --out {out}/proxy --epochs {cfg.proxy_epochs} "
        f"--optimizer adam --lr 1e-3 && hil-tune eval proxy {out}/proxy {out}/sweep",
        facts={
            "held_out_sources": final["split"]["held_out_sources"],
            "fidelity": rep["fidelity"],
            "spearman": rep["rank_agreement"]["spearman_mean"],
        },
        artefacts={
            "curves": "proxy/curves.png",
            "sensitivity": "proxy/report/sensitivity.png",
            "side_by_side": "proxy/report/side_by_side.png",
            "report": "proxy/report/report.json",
        },
    )
    return final["split"]["held_out_sources"]


def _predictor_step(out: Path, cfg: DemoConfig, console: Console, summary: dict[str, Any], held: list[str]) -> None:
    t = _step(console, summary, "predictor", "train the attention-aware predictor, evaluate on the real ISP")
    with progress(TextColumn("{task.fields[info]}"), console=console) as bar:
        task = bar.add_task("predictor epochs", total=cfg.predictor_epochs, info="")
        train_predictor(
            out / "sweep",
            out / "proxy",
            "reference",
            out / "predictor",
            PredictorConfig(),
            PredictorTrainConfig(epochs=cfg.predictor_epochs, seed=cfg.seed),
            on_epoch=lambda r: bar.update(task, advance=1, info=f"loss {r['train_loss']:.4f}"),
        )
    with console.status("expert and oracle settings by CMA-ES on the real ISP, then the table"):
        table = evaluate_predictor(
            out / "predictor",
            held,
            out / "predictor" / "report",
            size=cfg.eval_size,
            expert_budget=cfg.expert_budget,
            oracle_budget=cfg.oracle_budget,
            train_images=cfg.expert_images,
            workers=cfg.workers,
            seed=cfg.seed,
        )
    _done(
        summary,
        t,
        command=f"hil-tune train predictor {out}/sweep --proxy {out}/proxy --task reference --out "
        f"{out}/predictor && hil-tune eval predictor {out}/predictor " + " ".join(f"--images {h}" for h in held),
        facts={
            "table": table["summary"],
            "margins_db": table["margins_db"],
            "held_out": held,
            "expert_budget": cfg.expert_budget,
            "oracle_budget": cfg.oracle_budget,
        },
        artefacts={
            "grid": "predictor/report/grid.png",
            "table": "predictor/report/report.md",
            "curves": "predictor/curves.png",
        },
    )


def _live_step(out: Path, cfg: DemoConfig, console: Console, summary: dict[str, Any], scene: str) -> None:
    t = _step(console, summary, "live", "per-frame parameters pushed to the emulated serial board")
    live = _live(out, cfg, scene, console)
    _done(
        summary,
        t,
        command=f"hil-tune emulate serial --link /tmp/board & hil-tune live --driver serial --device "
        f"/tmp/board --predictor {out}/predictor --frames {cfg.live_frames}",
        facts=live,
        artefacts={"preview": "live/preview.gif", "log": "live/live.jsonl"},
    )


def _live(out: Path, cfg: DemoConfig, scene: str, console: Console) -> dict[str, Any]:
    from hil_tune.drivers.emulated.firmware import BoardFirmware
    from hil_tune.drivers.emulated.serial_pty import SerialEmulator
    from hil_tune.drivers.registry import create_driver
    from hil_tune.live import LiveLoop, LiveSettings

    (out / "live").mkdir(parents=True)
    model, _, profile = load_predictor(out / "predictor")
    firmware = BoardFirmware(sensor=scene.removeprefix("bundled:"), sensor_size=128)
    kept: list[Any] = []
    every = max(1, cfg.live_frames // 12)
    with SerialEmulator(firmware, link=out / "live" / "board") as emu, progress(console=console) as bar:
        task = bar.add_task("live frames", total=cfg.live_frames)

        def on_frame(frame: Any, row: dict[str, Any]) -> None:
            bar.update(task, advance=1)
            if row["frame"] % every == 0:
                kept.append((frame.image, f"#{row['frame']} {live_label(frame.params)}"))

        driver = create_driver("serial", load_profile("emulated-board"), device=str(emu.link))
        settings = LiveSettings(frames=cfg.live_frames)
        summary = LiveLoop(driver, model, profile, settings, log=out / "live" / "live.jsonl", on_frame=on_frame).run()
    frame_strip(kept[:12], out / "live" / "preview.gif")
    facts = summary.as_dict()
    (out / "live" / "summary.json").write_text(json.dumps(facts, indent=1))
    return facts
