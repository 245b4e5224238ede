"""`hil-tune refine`: the active loop on a device (hil_tune.refine)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hil_tune.cli_common import err, open_options, out


def register(app: typer.Typer) -> None:
    app.command("refine")(refine_cmd)


def refine_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Refine folder (rounds, rounds.json, rounds.png).")],
    proxy: Annotated[Path, typer.Option("--proxy", help="Proxy run to start from (its sweep must be there).")],
    predictor: Annotated[Path, typer.Option("--predictor", help="Predictor run to start from.")],
    driver: Annotated[str, typer.Option("--driver", help="Driver every render goes through.")] = "sim",
    device: Annotated[str | None, typer.Option("--device", help="Port, serial number or index.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE.")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds after round 0 (the starting models' table).")] = 3,
    samples_per_image: Annotated[
        int, typer.Option("--samples-per-image", "-k", help="Device samples per training image and round.")
    ] = 4,
    radius: Annotated[float, typer.Option(help="Half-width of the box around each prediction, encoded.")] = 0.1,
    patch: Annotated[int, typer.Option(help="Pixels a side of each new sample.")] = 64,
    proxy_epochs: Annotated[int, typer.Option("--proxy-epochs", help="Proxy fine-tuning per round.")] = 5,
    predictor_epochs: Annotated[int, typer.Option("--predictor-epochs", help="Predictor fine-tuning per round.")] = 8,
    images: Annotated[
        list[str] | None, typer.Option("--images", help="Training images (default: the predictor's own).")
    ] = None,
    eval_images: Annotated[
        list[str] | None, typer.Option("--eval-images", help="Held-out images (default: the proxy's held-out photos).")
    ] = None,
    eval_size: Annotated[int, typer.Option("--eval-size", help="Centre crop of each held-out image.")] = 64,
    expert_budget: Annotated[int, typer.Option("--expert-budget", help="Device queries, round 0 only.")] = 48,
    oracle_budget: Annotated[int, typer.Option("--oracle-budget", help="Device queries per image and round.")] = 24,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the refine folder (--rounds may grow).")] = False,
) -> None:
    """Resample where the predictor goes, fine-tune the proxy there, retrain the predictor: R rounds
    on the device, each measured on held-out images (rounds.json, rounds.png)."""
    from hil_tune.refine import Refine, RefineInputs, RefineSettings

    _, options = open_options(driver, device, option or [], 10.0)
    options.pop("timeout")
    settings = RefineSettings(
        rounds=rounds, samples_per_image=samples_per_image, radius=radius, patch=patch, proxy_epochs=proxy_epochs,
        predictor_epochs=predictor_epochs, eval_size=eval_size, expert_budget=expert_budget,
        oracle_budget=oracle_budget, seed=seed,
    )  # fmt: skip
    inputs = RefineInputs(proxy, predictor, driver, options, list(images or []), list(eval_images or []))
    start = time.monotonic()

    def on_step(step: str) -> None:
        err.print(f"[{time.monotonic() - start:7.1f} s] {step}", highlight=False)

    try:
        records = Refine(out_dir, inputs, settings, resume=resume, on_step=on_step).run()
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished steps are kept; continue with --resume --out {out_dir}")
        raise typer.Exit(130) from None
    header = "| round | predicted PSNR | expert | oracle | proxy vs device at predicted | device queries |"
    out.print(header, soft_wrap=True)
    out.print("|---|---|---|---|---|---|")
    for r in records:
        h = r["held_out"]
        out.print(
            f"| {r['round']} | {h['predicted']['psnr']:.2f} | {h['expert']['psnr']:.2f} | {h['oracle']['psnr']:.2f} "
            f"| {r['proxy_vs_device_at_predicted_db']['mean']:.2f} | {r['device_queries']['cumulative']} |",
            soft_wrap=True,
        )
    out.print(f"wrote {out_dir / 'rounds.json'} and {out_dir / 'rounds.png'}")
