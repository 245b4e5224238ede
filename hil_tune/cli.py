"""The `hil-tune` command: parse, call the library, print. Nothing here that Python callers lack.

Errors a user can cause (bad file, bad parameter, bad profile) print one line per problem and exit
with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hil_tune import cli_capture, cli_devices, cli_live, cli_refine, cli_train
from hil_tune.cli_common import err, out, parse_sets, read_params_file
from hil_tune.errors import HilTuneError, ProfileError
from hil_tune.outputs import check_output

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Hardware-in-the-loop camera ISP tuning.")
profile_app = typer.Typer(no_args_is_help=True, help="Inspect and check parameter-space profiles.")
isp_app = typer.Typer(no_args_is_help=True, help="Run the synthetic software ISP.")
demo_app = typer.Typer(no_args_is_help=True, help="Steps of `make demo`, each runnable on its own.")
app.add_typer(profile_app, name="profile")
app.add_typer(isp_app, name="isp")
app.add_typer(demo_app, name="demo")
cli_devices.register(app)
cli_capture.register(app)
cli_train.register(app)
cli_live.register(app)
cli_refine.register(app)

_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


# -- profile -----------------------------------------------------------------------------------------


@profile_app.command("show")
def profile_show(
    name_or_path: Annotated[str, typer.Argument(help="Bundled profile name (e.g. synthetic) or a .toml path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a profile's parameter space."""
    from hil_tune.profiles import load_profile

    profile = load_profile(name_or_path)
    if as_json:
        doc = {"name": profile.name, "params": [s.describe() for s in profile.params]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{profile.name}: {len(profile.params)} parameters", title_justify="left")
    for col in ("name", "group", "kind", "range / choices", "step", "default", "unit"):
        table.add_column(col)
    for s in profile.params:
        rng = f"{s.min} .. {s.max}" if s.kind == "grid" else ", ".join(s.choices or ())
        table.add_row(s.name, s.group, s.kind, rng, "" if s.step is None else str(s.step), str(s.default), s.unit)
    out.print(table)
    out.print(f"regions: {', '.join(profile.regions())}    sha256: {profile.sha256[:16]}")


@profile_app.command("validate")
def profile_validate(path: Annotated[Path, typer.Argument(help="Profile file to check.")]) -> None:
    """Exit 0 if the profile is valid; otherwise print every problem and exit 2."""
    from hil_tune.profiles import load_profile

    profile = load_profile(path)
    out.print(f"{path}: ok ({profile.name}, {len(profile.params)} parameters)")


# -- isp ---------------------------------------------------------------------------------------------


@isp_app.command("run")
def isp_run(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="RAW file, or an sRGB image to unprocess.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output PNG.")],
    profile_name: Annotated[str, typer.Option("--profile", help="Profile name or path.")] = "synthetic",
    sets: Annotated[list[str] | None, typer.Option("--set", help="NAME=VALUE, repeatable.")] = None,
    params_file: Annotated[Path | None, typer.Option("--params", help='JSON file {"name": value}.')] = None,
    seed: Annotated[int, typer.Option(help="Seed of the unprocessing draws for sRGB input.")] = 0,
    crop: Annotated[int, typer.Option(help="Centre crop to at most CROP x CROP pixels (0: whole frame).")] = 0,
) -> None:
    """Render INPUT through the synthetic ISP and write a PNG."""
    from PIL import Image

    from hil_tune.inputs import load_input
    from hil_tune.isp import SyntheticISP
    from hil_tune.profiles import load_profile

    profile = load_profile(profile_name)
    isp = SyntheticISP(profile)
    check_output(out_path, "--out")
    requested: dict[str, object] = {}
    if params_file is not None:
        requested.update(read_params_file(params_file))
    requested.update(parse_sets(sets or []))
    params, warnings = isp.resolve(requested)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    # the crop is taken before unprocessing: memory follows the crop, not the photo
    frame = load_input(input_path, seed=seed, tone=profile.pipeline.tone, gamma=profile.pipeline.gamma, crop=crop)
    with err.status(f"rendering {input_path.name} ({frame.shape[1]}x{frame.shape[0]})"):
        image = isp.run_frame(frame, params)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out_path)
    out.print(f"wrote {out_path}")


# -- demo --------------------------------------------------------------------------------------------


@demo_app.command("render")
def demo_render(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out/render"),
    size: Annotated[int, typer.Option(help="Centre crop of each image (bm3d costs seconds per plane).")] = 256,
    random_sets: Annotated[int, typer.Option("--random", help="Random parameter sets per image.")] = 3,
    region: Annotated[str, typer.Option(help="Sampling region of the random sets.")] = "plausible",
    seed: Annotated[int, typer.Option()] = 0,
    profile_name: Annotated[str, typer.Option("--profile")] = "synthetic",
) -> None:
    """Render bundled photos (unprocessed to RAW) and HIL_TUNE_RAW_DIR files; write PNGs and a contact sheet."""
    from hil_tune.demo import render_bundled

    sheet = render_bundled(out_dir, size=size, n_random=random_sets, region=region, seed=seed, profile=profile_name)
    out.print(f"contact sheet: {sheet}")


@demo_app.command("all")
def demo_all(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (replaced).")] = Path("demo-out"),
    live_frames: Annotated[int, typer.Option("--live-frames")] = 200,
    samples_per_source: Annotated[int, typer.Option("--samples-per-source", "-m")] = 12,
) -> None:
    """The whole loop on the simulator: render, capture, proxy, predictor, live; writes report.html."""
    from hil_tune.demo_all import DemoConfig, run_demo

    cfg = DemoConfig(live_frames=live_frames, samples_per_source=samples_per_source)
    report = run_demo(out_dir, cfg, err)
    out.print(f"report: {report.resolve()}")


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except HilTuneError as e:
        if _state["debug"]:
            raise
        lines = e.problems if isinstance(e, ProfileError) else [str(e)]
        prefix = f"{e.path}: " if isinstance(e, ProfileError) else ""
        for line in lines:
            err.print(f"[red]error:[/] {prefix}{line}", highlight=False, soft_wrap=True)
        for note in getattr(e, "__notes__", []):  # what a rollback found, read back from the device
            err.print(f"  {note}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
