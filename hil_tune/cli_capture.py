"""`hil-tune capture` and `hil-tune dataset info|verify|preview`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TextColumn
from rich.table import Table

from hil_tune.cli_common import driver_profile, err, open_options, out
from hil_tune.errors import HilTuneError

if TYPE_CHECKING:
    from hil_tune.capture.loop import CaptureResult, CaptureSettings
    from hil_tune.capture.prepare import PlanRequest
    from hil_tune.profiles import Profile

dataset_app = typer.Typer(no_args_is_help=True, help="Inspect, check and preview sweep datasets.")


def register(app: typer.Typer) -> None:
    app.command("capture")(capture)
    app.add_typer(dataset_app, name="dataset")


def capture(
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder (created; never overwritten).")],
    driver: Annotated[str, typer.Option("--driver", help="Driver name.")] = "sim",
    profile: Annotated[str | None, typer.Option("--profile", help="Profile (default: the driver's).")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="RAW/image file or folder, bundled, bundled:NAME, or live; NAME@K: K unprocessing draws "
            "(K cameras) of an sRGB or bundled photo. Repeatable.",
        ),
    ] = None,
    samples_per_source: Annotated[int, typer.Option("--samples-per-source", "-m")] = 8,
    patch: Annotated[int, typer.Option(help="Patch size (pixels a side, even); the paper uses 512.")] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    region: Annotated[str, typer.Option(help="full, or a \\[region.NAME] of the profile.")] = "plausible",
    around: Annotated[Path | None, typer.Option(help="JSON parameter set(s) to sample around.")] = None,
    radius: Annotated[float, typer.Option(help="Half-width of the --around box, encoded units.")] = 0.1,
    workers: Annotated[int, typer.Option(help="Processes (simulator only).")] = 1,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Samples per shard.")] = 64,
    part: Annotated[
        str | None,
        typer.Option("--part", help="K/N: capture part K of N of the plan (whole shards); `dataset merge` joins them."),
    ] = None,
    parts: Annotated[
        int | None, typer.Option("--parts", help="Simulator: split the plan into N parts run as tasks, then merge.")
    ] = None,
    executor: Annotated[str, typer.Option(help="With --parts: local (processes) or dask.")] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="With --executor dask: a scheduler address (default: a LocalCluster).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the plan already in --out.")] = False,
    retries: Annotated[int, typer.Option(help="Attempts after a device fault, per sample.")] = 3,
    device: Annotated[str | None, typer.Option("--device", help="Port, serial number or index.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE.")] = None,
    restore: Annotated[
        bool, typer.Option("--restore/--no-restore", help="Put the device back on its pre-sweep setting at the end.")
    ] = True,
) -> None:
    """Sweep LHC parameter sets over sources through a device into a resumable dataset."""
    from hil_tune.capture.loop import CaptureSettings
    from hil_tune.capture.parts import Part, read_part
    from hil_tune.capture.prepare import PlanRequest, prepare_capture

    cls, options = open_options(driver, device, option or [], 10.0)
    options.pop("timeout")
    share = Part.parse(part) if part is not None else None
    request = PlanRequest(source or [], samples_per_source, patch, seed, region, around, radius, shard_size, share)
    if parts is not None:
        settings = CaptureSettings(driver=driver, driver_options=options, profile=profile, retries=retries)
        _capture_in_parts(out_dir, request, driver_profile(cls, profile), settings, parts, executor, scheduler, workers)
        return
    prepared = prepare_capture(
        out_dir, request, resume=resume, profile=lambda: driver_profile(cls, profile),
        profile_given=profile is not None, planning=lambda: err.status("planning (loading sources, Latin hypercube)"),
    )  # fmt: skip
    plan = prepared.plan
    held = read_part(out_dir)
    share_text = f", part {held} ({len(held.indices(plan))} of them)" if held is not None else ""
    if prepared.resumed:
        err.print(f"resuming {out_dir}: plan of {len(plan.rows)} samples{share_text}, region {plan.region.name}")
    else:
        err.print(
            f"planned {len(plan.rows)} samples ({len(plan.sources)} sources, region {plan.region.name}){share_text}"
        )
    settings = CaptureSettings(driver=driver, driver_options=options, profile=profile, retries=retries, restore=restore)
    result = _run_with_progress(out_dir, settings, workers, len(held.indices(plan)) if held else len(plan.rows))
    for why in result.recaptured:
        err.print(f"[yellow]corrupt[/] {why}", highlight=False)
    out.print(f"{result.written}/{result.planned} samples in {out_dir} ({result.seconds:.1f} s this run)")
    if result.restored is False:
        err.print("[yellow]warning[/]: the device could not be put back on its pre-sweep setting", highlight=False)
    if result.failed:
        for index, why in sorted(result.failed.items()):
            err.print(f"[red]failed[/] sample {index}: {why}", highlight=False)
        raise HilTuneError(f"{len(result.failed)} sample(s) failed (listed above); rerun with --resume to retry them")


def _run_with_progress(out_dir: Path, settings: CaptureSettings, workers: int, total: int) -> CaptureResult:
    """run_capture under a progress bar (rate, failures); Ctrl-C says how to continue."""
    from hil_tune.capture.loop import run_capture
    from hil_tune.ui import progress

    start = time.monotonic()
    with progress(TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[failed]}"), console=err) as bar:
        task = bar.add_task("capture", total=total, rate="", failed="")
        first: list[int] = []

        def on_progress(done: int, failed: int, total: int) -> None:
            if not first:
                first.append(done)
            rate = (done - first[0]) / max(time.monotonic() - start, 1e-9)
            bar.update(task, completed=done + failed, rate=f"{rate:.2f} samples/s",
                       failed=f"[red]{failed} failed[/]" if failed else "")  # fmt: skip

        try:
            return run_capture(out_dir, settings, workers=workers, on_progress=on_progress)
        except KeyboardInterrupt:
            err.print(f"[yellow]interrupted[/]: written samples are safe; continue with --resume --out {out_dir}")
            raise typer.Exit(130) from None


def _capture_in_parts(
    out_dir: Path,
    request: PlanRequest,
    prof: Profile,
    settings: CaptureSettings,
    parts: int,
    executor: str,
    scheduler: str | None,
    workers: int,
) -> None:
    """`capture --parts N`: plan once, run the parts as executor tasks, merge (a rerun continues them)."""
    from hil_tune.capture.executor import part_folders, run_parts

    if parts < 1:
        raise HilTuneError(f"--parts {parts}: need at least 1")
    with err.status(f"planning, then capturing {parts} part(s) on {executor}"):
        plan = request.build(prof)
        n_workers = workers if workers > 1 else None
        result = run_parts(out_dir, plan, settings, parts, executor=executor, workers=n_workers, scheduler=scheduler)
    for folder, r in result.parts.items():
        err.print(f"{folder}: {r['written']}/{r['planned']} samples, {len(r['failed'])} failed", highlight=False)
    if result.merged is None:
        where = part_folders(out_dir, parts)[0].parent
        raise HilTuneError(f"a part has failed samples (in {where}); rerun the same command to retry them")
    out.print(f"{result.merged.samples} samples in {result.merged.shards} shards -> {out_dir}")


@dataset_app.command("info")
def dataset_info_cmd(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Counts, sources, parameter coverage and the clipped-pixel histogram."""
    from hil_tune.capture.dataset import DatasetReader
    from hil_tune.capture.report import dataset_info

    info = dataset_info(DatasetReader(path))
    if as_json:
        out.print_json(json.dumps(info))
        return
    counts = f"{info['written']}/{info['planned']} samples written, {len(info['failed'])} failed"
    out.print(
        f"[bold]{info['path']}[/]: {counts}; profile {info['profile']}, region {info['region']}, seed {info['seed']}"
    )
    if info["missing"]:
        err.print(
            f"[yellow]warning[/]: {len(info['missing'])} sample(s) the manifest marks done are in no readable file "
            f"(first: {info['missing'][0]}); run `hil-tune dataset verify`, then `capture --resume` to redo them",
            highlight=False,
            soft_wrap=True,
        )
    t = Table("source", "samples")
    for s, n in info["sources"].items():
        t.add_row(s, str(n))
    out.print(t)
    clip = info["clipped_share"]
    out.print(f"clipped pixels per sample (median {clip['median']:.1%}, over half clipped: {clip['over_half']:.0%}):")
    peak = max(clip["histogram"]) or 1
    for lo, hi, n in zip(clip["bins"][:-1], clip["bins"][1:], clip["histogram"], strict=True):
        out.print(f"  {lo:4.0%}-{hi:4.0%} {'#' * round(30 * n / peak):30} {n}")
    t = Table("parameter", "min (enc)", "max (enc)", "coverage (10 bins)")
    for name, c in info["coverage_encoded"].items():
        bars = "".join(" ▁▂▃▄▅▆▇█"[min(8, round(8 * n / max(max(c["histogram"]), 1)))] for n in c["histogram"])
        t.add_row(
            name,
            f"{c['min']:.2f}" if c["min"] is not None else "-",
            f"{c['max']:.2f}" if c["max"] is not None else "-",
            bars,
        )
    out.print(t)


@dataset_app.command("verify")
def dataset_verify(path: Annotated[Path, typer.Argument(help="Dataset folder.")]) -> None:
    """Every manifest row has its data and every checksum matches; exit 1 otherwise."""
    from hil_tune.capture.dataset import DatasetReader

    reader = DatasetReader(path)
    problems = reader.verify()
    for p in problems:
        err.print(f"[red]problem:[/] {p}", highlight=False, soft_wrap=True)
    failed = reader.failed()
    out.print(f"{len(reader)} samples checked, {len(problems)} problem(s), {len(failed)} failed sample(s) recorded")
    if problems:
        raise typer.Exit(1)


@dataset_app.command("preview")
def dataset_preview(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="PNG contact sheet.")],
    sources: Annotated[int, typer.Option(help="How many sources (rows).")] = 4,
    per_source: Annotated[int, typer.Option("--per-source", help="Samples per row.")] = 8,
) -> None:
    """A contact sheet of outputs across the sweep, labelled with the parameters that vary most."""
    from hil_tune.capture.dataset import DatasetReader
    from hil_tune.capture.report import preview

    out.print(f"wrote {preview(DatasetReader(path), out_path, sources=sources, per_source=per_source)}")


@dataset_app.command("merge")
def dataset_merge(
    out_dir: Annotated[Path, typer.Argument(help="Merged dataset folder (created; never overwritten).")],
    parts: Annotated[list[Path], typer.Argument(help="Part folders (capture --part K/N) of one plan.")],
) -> None:
    """Join the parts of one plan into one dataset: same plan, every index once, every checksum; or nothing."""
    from hil_tune.capture.merge import merge_parts

    merged = merge_parts(out_dir, parts)
    out.print(f"merged {len(merged.parts)} part(s): {merged.samples} samples in {merged.shards} shards -> {out_dir}")
