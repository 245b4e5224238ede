"""`hil-tune train proxy` and `hil-tune eval proxy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TextColumn

from hil_tune.cli_common import err, open_options, out
from hil_tune.errors import InputError
from hil_tune.outputs import check_output

train_app = typer.Typer(no_args_is_help=True, help="Train the ISP proxy or the per-image parameter predictor.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure trained models against the real ISP.")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    app.command("predict")(predict_cmd)
    app.command("tune")(tune_cmd)


_SCHEDULE_HELP = "step (x lr-gamma every lr-step epochs) or cosine (to 0 over the epochs)."
_CACHE_HELP = (
    "Grey-box: after the structure probe, fix the denoiser's noise scales and filter each sample once per "
    "run, keeping up to this many MiB of filtered mosaics (0: filter every epoch)."
)
_PROBE_HELP = (
    "Grey-box: steps of the structure probe that picks its denoiser and block order before training "
    "(default 60; 0: keep every candidate). Each step runs the collaborative filter."
)


@train_app.command("proxy")
def train_proxy_cmd(
    dataset: Annotated[Path, typer.Argument(help="Sweep dataset folder (hil-tune capture).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, curves, metrics.")],
    model: Annotated[str, typer.Option(help="greybox (default) or unet (the paper's).")] = "greybox",
    epochs: Annotated[int, typer.Option()] = 20,
    batch: Annotated[int, typer.Option()] = 8,
    optimizer: Annotated[
        str | None, typer.Option(help="rmsprop or adam (default: adam for greybox, the paper's rmsprop for unet).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: 1e-3 greybox, the paper's 1e-4 unet).")
    ] = None,
    lr_step: Annotated[int, typer.Option("--lr-step", help="Epochs between x lr-gamma decays.")] = 10,
    lr_gamma: Annotated[float, typer.Option("--lr-gamma")] = 0.9,
    lr_schedule: Annotated[str | None, typer.Option("--lr-schedule", help=_SCHEDULE_HELP)] = None,
    width: Annotated[int, typer.Option(help="Channels at full resolution.")] = 16,
    depth: Annotated[int, typer.Option(help="U-Net levels.")] = 3,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's checkpoint.")] = False,
    denoise_cache_mib: Annotated[int, typer.Option("--denoise-cache-mib", help=_CACHE_HELP)] = 2048,
    probe_steps: Annotated[int | None, typer.Option("--probe-steps", help=_PROBE_HELP)] = None,
) -> None:
    """Train a differentiable proxy of the ISP on a sweep (L2 to the ISP output)."""
    import os

    import torch

    from hil_tune.capture.dataset import DatasetFolder
    from hil_tune.models.proxy import KINDS, ProxyConfig
    from hil_tune.train.proxy_train import RECIPES, TrainConfig, train_proxy
    from hil_tune.ui import progress

    if model not in KINDS:
        raise InputError(f"--model {model!r}: choose one of {', '.join(KINDS)}")
    recipe = RECIPES[model]  # what the CLI leaves unsaid is the documented recipe of the model kind
    optimizer, lr = optimizer or recipe["optimizer"], recipe["lr"] if lr is None else lr
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device here")
    check_output(out_dir, "--out", folder=True)
    if (out_dir / "checkpoint.pt").exists() and not resume:
        raise InputError(f"{out_dir} already holds a run: add --resume to continue it, or choose a new folder")
    os.environ["HIL_TUNE_DEVICE"] = device
    profile = DatasetFolder(dataset).plan().load_profile()
    cfg = TrainConfig(epochs=epochs, batch=batch, optimizer=optimizer, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma,
                      lr_schedule=lr_schedule or recipe["lr_schedule"], seed=seed, device=device,
                      denoise_cache_mib=denoise_cache_mib,
                      **({} if probe_steps is None else {"probe_steps": probe_steps}))  # fmt: skip
    rank = int(os.environ.get("RANK", "0"))
    with progress(TextColumn("{task.fields[info]}"), console=err, disable=rank != 0) as bar:
        task = bar.add_task(f"{model} epoch", total=None, info="")
        state = {"epoch": 0}

        def on_batch(step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=step, total=steps, description=f"{model} epoch {state['epoch'] + 1}/{epochs}",
                       info=f"loss {loss:.2e}")  # fmt: skip

        def on_epoch(record: dict) -> None:
            state["epoch"] = record["epoch"] + 1
            bar.console.print(_epoch_line(record))

        final = train_proxy(dataset, out_dir, profile, ProxyConfig(kind=model, width=width, depth=depth), cfg,
                            resume=resume, on_epoch=on_epoch, on_batch=on_batch)  # fmt: skip
    if rank == 0:
        out.print(f"wrote {out_dir / 'model.pt'} (+ .json sidecar), curves {out_dir / 'curves.png'}")
        out.print_json(data=final["metrics"])


def _epoch_line(record: dict) -> str:
    """One line per finished epoch: loss, held-out PSNR where there is a held-out set, speed."""
    parts = [f"epoch {record['epoch'] + 1}: loss {record['train_loss']:.2e}"]
    for key, label in (("val_sources_psnr", "unseen images"), ("val_params_psnr", "unseen settings")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.2f} dB")
    parts.append(f"{record['samples_per_s']:.1f} samples/s")
    return ", ".join(parts)


@eval_app.command("proxy")
def eval_proxy_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Proxy run folder (hil-tune train proxy --out).")],
    dataset: Annotated[Path, typer.Argument(help="Dataset (its held-out split is used).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default RUN_DIR/report).")] = None,
    driver: Annotated[str | None, typer.Option(help="Device to compare with (default: sim, same firmware).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE.")] = None,
    points: Annotated[int, typer.Option(help="Values per parameter in the sensitivity curves.")] = 5,
    rank_sets: Annotated[int, typer.Option("--rank-sets", help="Parameter sets per image for Spearman.")] = 12,
) -> None:
    """Fidelity report of a proxy against the device: PSNR/SSIM, sensitivity, Spearman, figures."""
    from hil_tune.train.proxy_eval import evaluate_proxy

    options: dict = {}
    if driver is not None:
        _, options = open_options(driver, None, option or [], 10.0)
    target = out_dir or run_dir / "report"
    check_output(target, "--out", folder=True)
    with err.status("measuring the proxy against the device"):
        report = evaluate_proxy(run_dir, dataset, target, driver=driver, driver_options=options,
                                sensitivity_points=points, rank_sets=rank_sets)  # fmt: skip
    for name, f in report["fidelity"].items():
        p, s = f["psnr"], f["ssim"]
        if p["n"]:
            out.print(f"{name}: PSNR mean {p['mean']:.2f} / median {p['median']:.2f} / worst 5% {p['worst5']:.2f} dB, "
                      f"SSIM mean {s['mean']:.3f} ({p['n']} samples)")  # fmt: skip
    rank = report["rank_agreement"]
    if rank["spearman_mean"] is not None:
        out.print(f"Spearman (proxy loss vs device loss): {rank['spearman_mean']:.3f} over {rank['images']} images")
    weakest = sorted(report["sensitivity"].items(), key=lambda kv: min(kv[1]["psnr"]))[:3]
    out.print("parameters the proxy follows least: " + ", ".join(f"{k} ({min(v['psnr']):.1f} dB)" for k, v in weakest))
    out.print(f"wrote {target / 'report.json'}, {target / 'sensitivity.png'}, {target / 'side_by_side.png'}")


@train_app.command("predictor")
def train_predictor_cmd(
    dataset: Annotated[Path, typer.Argument(help="Sweep dataset (the RAW patches and references).")],
    proxy: Annotated[Path, typer.Option("--proxy", help="Proxy run folder (frozen during training).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")],
    task: Annotated[
        str, typer.Option(help="reference, or package.module:factory for a downstream network.")
    ] = "reference",
    epochs: Annotated[int, typer.Option()] = 30,
    batch: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 1e-3,
    lr_schedule: Annotated[
        str, typer.Option("--lr-schedule", help="constant, or cosine (decays to 0 over the epochs).")
    ] = "constant",
    dim: Annotated[int, typer.Option(help="Token width.")] = 64,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume")] = False,
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--images",
            help="Train on fresh crops and camera draws of these photos (files, folders, "
            "bundled, NAME@K) instead of the sweep's patches. Repeatable.",
        ),
    ] = None,
    crop: Annotated[int, typer.Option(help="With --images: crop size in pixels.")] = 128,
    crops_per_image: Annotated[int, typer.Option("--crops-per-image", help="With --images: per photo and epoch.")] = 4,
    ema: Annotated[
        float, typer.Option(help="Per-step decay of a moving average of the weights, scored and kept (0: off).")
    ] = 0.0,
    held_out_crops: Annotated[
        int,
        typer.Option(
            "--held-out-crops",
            help="With --images: pick the kept epoch on this many fixed crops of each held-out photo "
            "(0: on the sweep's held-out patches).",
        ),
    ] = 0,
) -> None:
    """Train the attention-aware predictor through the frozen proxy for a task."""
    from hil_tune.models.predictor import PredictorConfig
    from hil_tune.train.predictor_train import PredictorTrainConfig, train_predictor
    from hil_tune.ui import progress

    check_output(out_dir, "--out", folder=True)
    if (out_dir / "checkpoint.pt").exists() and not resume:
        raise InputError(f"{out_dir} already holds a run: add --resume to continue it, or choose a new folder")
    cfg = PredictorTrainConfig(epochs=epochs, batch=batch, lr=lr, seed=seed, device=device, crop=crop,
                               crops_per_image=crops_per_image, lr_schedule=lr_schedule, ema=ema,
                               held_out_crops=held_out_crops)  # fmt: skip
    with progress(TextColumn("{task.fields[info]}"), console=err) as bar:
        t = bar.add_task("predictor", total=None, info="")

        def on_batch(step: int, steps: int, loss: float) -> None:
            bar.update(t, completed=step, total=steps, info=f"loss {loss:.3f}")

        def on_epoch(record: dict) -> None:
            held = record.get("held_out_loss")
            bar.console.print(f"epoch {record['epoch'] + 1}/{epochs}: train loss {record['train_loss']:.4f}"
                              + (f", held-out images {held:.4f}" if held is not None else ""))  # fmt: skip

        final = train_predictor(dataset, proxy, task, out_dir, PredictorConfig(dim=dim), cfg, resume=resume,
                                on_epoch=on_epoch, on_batch=on_batch, images=images)  # fmt: skip
    out.print(f"wrote {out_dir / 'model.pt'} (+ .json sidecar), curves {out_dir / 'curves.png'}")
    out.print_json(data=final["metrics"])


DriverOpt = Annotated[
    str | None, typer.Option("--driver", help="Render on this device's driver (default: the run's built-in ISP).")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Port, serial number or index, per driver.")]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE, repeatable.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds for each device call.")]


def _renderer(run_dir: Path, driver: str | None, device: str | None, pairs: list[str] | None, timeout: float) -> Any:
    """A DeviceRenderer on the run's own profile when --driver is given, else None (built-in ISP)."""
    if driver is None:
        if device or pairs:
            raise InputError("--device and --option need --driver")
        return None
    from hil_tune.train.predictor_train import load_predictor
    from hil_tune.train.renderers import DeviceRenderer

    _, _, profile = load_predictor(run_dir)
    cls, options = open_options(driver, device, pairs or [], timeout)
    return DeviceRenderer(cls(profile, **options), profile)


ProxyStepsOpt = Annotated[
    int,
    typer.Option(
        "--proxy-steps",
        help="Per-image descent through the proxy before the device search (Adam steps; 0: device search alone).",
    ),
]
ProxyRunOpt = Annotated[
    Path | None, typer.Option("--proxy", help="Proxy run for that descent (default: the one the predictor used).")
]


@eval_app.command("predictor")
def eval_predictor_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Predictor run folder.")],
    images: Annotated[list[str], typer.Option("--images", help="Held-out images (files, bundled:NAME, NAME@K draws).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default RUN_DIR/report).")] = None,
    size: Annotated[int, typer.Option(help="Centre crop of each image.")] = 128,
    expert_budget: Annotated[int, typer.Option("--expert-budget", help="Device queries for the expert.")] = 48,
    oracle_budget: Annotated[int, typer.Option("--oracle-budget", help="Device queries per image.")] = 24,
    workers: Annotated[int, typer.Option(help="Processes rendering on the built-in ISP.")] = 2,
    driver: DriverOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    timeout: TimeoutOpt = 60.0,
    proxy_steps: ProxyStepsOpt = 20,
    proxy_run: ProxyRunOpt = None,
) -> None:
    """Default / expert / predicted / predicted+K / ideal / oracle settings, all measured on the
    device (--driver) or the run's built-in ISP, with the device queries each used."""
    from hil_tune.train.predictor_eval import evaluate_predictor, markdown

    target = out_dir or run_dir / "report"
    check_output(target, "--out", folder=True)
    renderer = _renderer(run_dir, driver, device, option, timeout)
    try:
        with err.status("optimising the expert and oracle settings on the device (CMA-ES)"):
            report = evaluate_predictor(run_dir, images, target, size=size, expert_budget=expert_budget,
                                        oracle_budget=oracle_budget, workers=workers, renderer=renderer,
                                        proxy_steps=proxy_steps, proxy_run=proxy_run)  # fmt: skip
    finally:
        if renderer is not None:
            renderer.close()
    out.print(markdown(report))
    out.print(f"wrote {target / 'report.md'}, {target / 'report.json'}, {target / 'grid.png'}")


def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Predictor run folder.")],
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="RAW file, sRGB image or bundled:NAME.")],
    out_png: Annotated[Path, typer.Option("--out", help="Output PNG rendered by the device.")],
    params_out: Annotated[Path | None, typer.Option("--params-out", help="Write the parameters as JSON.")] = None,
    size: Annotated[int, typer.Option(help="Centre crop (0: whole frame).")] = 0,
    driver: DriverOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Predict parameters for INPUT, snap them to the grid, render on the device (or built-in ISP)."""
    import json

    from hil_tune.train.predictor_eval import render_prediction

    check_output(out_png, "--out")
    if params_out is not None:
        check_output(params_out, "--params-out")
    renderer = _renderer(run_dir, driver, device, option, timeout)
    try:
        params = render_prediction(run_dir, input_path, out_png, size or None, renderer=renderer)
    finally:
        if renderer is not None:
            renderer.close()
    if params_out is not None:
        params_out.write_text(json.dumps(params, indent=2))
    out.print_json(data=params)
    out.print(f"wrote {out_png}")


def tune_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Predictor run folder.")],
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="sRGB image or bundled:NAME (its reference).")],
    queries: Annotated[int, typer.Option("--queries", help="Device renders after the prediction's own.")] = 10,
    params_out: Annotated[Path | None, typer.Option("--out", help="Write the best parameters as JSON.")] = None,
    size: Annotated[int, typer.Option(help="Centre crop (0: whole frame).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the local search.")] = 0,
    driver: DriverOpt = None,
    device: DeviceOpt = None,
    option: OptionOpt = None,
    timeout: TimeoutOpt = 60.0,
    workers: Annotated[int, typer.Option(help="Processes rendering on the built-in ISP.")] = 1,
    proxy_steps: ProxyStepsOpt = 20,
    proxy_run: ProxyRunOpt = None,
) -> None:
    """Tune INPUT's parameters on the device, starting at the prediction: the first query renders a
    descent through the proxy (free of device queries), the rest search locally; best setting and score."""
    import json

    from hil_tune.train.predictor_eval import run_firmware, tune_image
    from hil_tune.train.predictor_train import load_predictor
    from hil_tune.train.renderers import BuiltinRenderer

    if params_out is not None:
        check_output(params_out, "--out")

    if queries < 0:
        raise InputError(f"--queries {queries}: must be 0 or more")
    renderer = _renderer(run_dir, driver, device, option, timeout)
    if renderer is None:
        _, side, profile = load_predictor(run_dir)
        renderer = BuiltinRenderer(profile, run_firmware(side), workers)
    try:
        result = tune_image(run_dir, input_path, renderer, queries, size or None, seed, proxy_steps, proxy_run)
    finally:
        renderer.close()
    if params_out is not None:
        params_out.write_text(json.dumps(result["best"], indent=2))
    out.print_json(data=result)
