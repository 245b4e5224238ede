"""Per-image prediction on the real ISP, and the evaluation table against fixed settings.

Every number here comes from the real ISP (the paper's inference stage: predicted values are
snapped to the profile's grid and rendered by the device, not by the proxy):
- default: the profile's defaults;
- expert: the single fixed setting that is best on the *training* images, found by CMA-ES (the
  `cma` package) on the real ISP inside the dataset's region, with a stated budget;
- predicted: ours; predicted+K: K device queries of per-image tuning from it (a descent through
  the proxy rendered once, then a local search);
- ideal: the camera's own inverse where the source knows it, with a small denoise search;
- oracle: the same optimiser per held-out image, started from the best of all the others, with a
  stated budget: a ceiling on the optimised loss, not a method.
The objective and the reported figures compare against the reference image: L1 + (1 - SSIM) is
optimised, PSNR and SSIM are reported.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import cma
import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from hil_tune.capture.dataset import DatasetReader
from hil_tune.capture.sources import Source, load_source, photo_of, resolve_sources, source_from_id
from hil_tune.errors import InputError
from hil_tune.isp.denoise import check_size
from hil_tune.metrics import psnr
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame, pack4
from hil_tune.train.predictor_train import load_predictor
from hil_tune.train.proxy_descent import PROXY_STEPS, ProxyStage, descend, proxy_stage
from hil_tune.train.render_cache import CachedRenderer
from hil_tune.train.renderers import BuiltinRenderer, DeviceRenderer, Renderer
from hil_tune.ui import contact_sheet


def predict_params(model: torch.nn.Module, profile: Profile, frame: RawFrame) -> ParamDict:
    """Predicted parameters for one frame, snapped to the grid (nearest value, choices by bin)."""
    packed = torch.from_numpy(np.ascontiguousarray(pack4(frame.normalized(), frame.cfa).transpose(2, 0, 1)))[None]
    with torch.no_grad():
        u = model(packed)[0].numpy()
    return profile.space.decode(u)


def run_firmware(side: dict[str, Any]) -> str:
    """The built-in firmware a predictor run was trained against: recorded in its sidecar (newer
    runs), else read from its dataset (older runs, which need the dataset folder)."""
    if side.get("firmware"):
        return str(side["firmware"])
    return DatasetReader(side["dataset"]["path"]).firmware_variant()


def score(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a, b = output.astype(np.float64) / 255, reference.astype(np.float64) / 255
    s = float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))
    return {"psnr": psnr(a, b), "ssim": s, "loss": float(np.abs(a - b).mean()) + 1 - s}


def optimise(
    isp: Renderer,
    profile: Profile,
    frames: list[tuple[RawFrame, np.ndarray]],
    lower: np.ndarray,
    upper: np.ndarray,
    budget: int,
    x0: np.ndarray,
    seed: int,
) -> tuple[ParamDict, float]:
    """CMA-ES over the encoded region box; the mean loss over `frames` on the real ISP. x0 counts.

    A generation's settings go to the renderer in one call (population x frames jobs), so a
    worker pool renders them side by side: one image's oracle otherwise kept a single worker busy.
    """
    span = upper - lower
    scale = np.where(span > 0, span, 1.0)
    names = [f.source or "image" for f, _ in frames]

    def losses_of(us: list[np.ndarray]) -> list[float]:
        settings = [profile.space.decode(np.clip(u, lower, upper)) for u in us]
        outs = isp.render([(f, p) for p in settings for f, _ in frames], names * len(settings))
        per = [score(o, ref)["loss"] for o, (_, ref) in zip(outs, frames * len(settings), strict=True)]
        return [float(np.mean(per[i : i + len(frames)])) for i in range(0, len(per), len(frames))]

    best_u = np.clip(x0, lower, upper)
    best, used = losses_of([best_u])[0], 1
    es = cma.CMAEvolutionStrategy(
        ((best_u - lower) / scale).tolist(), 0.25, {"bounds": [0, 1], "seed": seed + 1, "verbose": -9, "popsize": 8}
    )
    while used < budget:
        xs = es.ask()[: budget - used]
        losses = losses_of([lower + np.asarray(x) * scale for x in xs])
        used += len(xs)
        if len(xs) == es.popsize:
            es.tell(xs, losses)
        i = int(np.argmin(losses))
        if losses[i] < best:
            best, best_u = losses[i], lower + np.asarray(xs[i]) * scale
    return profile.space.decode(best_u), best


def refine(
    isp: Renderer,
    profile: Profile,
    frame: RawFrame,
    reference: np.ndarray,
    start: ParamDict,
    lower: np.ndarray,
    upper: np.ndarray,
    queries: int,
    seed: int,
    *,
    start_loss: float | None = None,
    stage: ProxyStage | None = None,
) -> tuple[ParamDict, float, int, np.ndarray | None]:
    """Per-image tuning on the device warm-started at `start`, `queries` renders after the start's
    own: with a proxy `stage`, the first query renders the setting found by descending through the
    proxy from `start` (no device query spent on the descent); the rest, or all without a stage,
    are a (1+1) evolution strategy in the encoded region box with the one-fifth success rule, from
    the better of the two.

    Why not CMA-ES here: with 4 to 10 queries CMA-ES does not finish its first generation; a
    (1+1)-ES moves after every query, and starting from a good prediction it needs only small steps.
    Returns (best setting, its loss, renders used including the start's when it was not given, the
    best setting's output, or None when no query beat a start given with its loss).
    """
    rng = np.random.default_rng(seed)
    span = np.where(upper - lower > 0, upper - lower, 0.0)
    best_u = np.clip(profile.space.encode(start), lower, upper)
    best_params = profile.space.decode(best_u)
    used, best_out = 0, None
    if start_loss is None:
        best_out = isp.render([(frame, best_params)], [frame.source or "image"])[0]
        start_loss = score(best_out, reference)["loss"]
        used += 1
    best, step = float(start_loss), 0.08
    if stage is not None and queries > 0:
        found = descend(stage, frame, reference, best_u, lower, upper)
        trial = profile.space.decode(found)
        out = isp.render([(frame, trial)], [frame.source or "image"])[0]
        loss = score(out, reference)["loss"]
        used, queries = used + 1, queries - 1
        if loss < best:
            best, best_u, best_params, best_out = loss, np.clip(profile.space.encode(trial), lower, upper), trial, out
    for _ in range(queries):
        trial_u = np.clip(best_u + step * span * rng.standard_normal(len(best_u)), lower, upper)
        trial = profile.space.decode(trial_u)
        out = isp.render([(frame, trial)], [frame.source or "image"])[0]
        loss = score(out, reference)["loss"]
        used += 1
        if loss < best:
            best, best_u, best_params, best_out = loss, trial_u, trial, out
            step *= 1.5
        else:
            step *= 1.5 ** (-1 / 4)  # one success in five keeps the step
    return best_params, best, used, best_out


IDEAL_DENOISE = (("filter-strength", 3), ("noise-var", 3))  # knob, grid points across the region


def snapped(profile: Profile, params: ParamDict, wanted: dict[str, Any]) -> ParamDict:
    """`params` with the `wanted` values, each clipped into its knob's range and snapped to its grid
    (a choice knob takes its value as it is): the nearest setting a device could hold."""
    out = dict(params)
    for k, v in wanted.items():
        spec = profile.space[k]
        if spec.kind == "grid":
            out[k] = spec.quantize(min(max(float(v), float(spec.min)), float(spec.max)))[0]  # type: ignore[arg-type]
        else:
            out[k] = v
    return out


def best_ideal(
    isp: Renderer, profile: Profile, frame: RawFrame, ref: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[ParamDict, np.ndarray, int] | None:
    """The ideal row's setting for one image (the candidate of `ideal_candidates` with the lowest
    loss on the device), its output and the renders it took; None where the source cannot say."""
    candidates = ideal_candidates(profile, frame, lower, upper)
    if not candidates:
        return None
    renders = isp.render([(frame, c) for c in candidates], [frame.source or "image"] * len(candidates))
    k = int(np.argmin([score(o, ref)["loss"] for o in renders]))
    return candidates[k], renders[k], len(candidates)


def ideal_candidates(profile: Profile, frame: RawFrame, lower: np.ndarray, upper: np.ndarray) -> list[ParamDict]:
    """The camera's own inverse, where the source knows it (an unprocessed photo records its white
    balance and colour matrix draws), with a small denoise search: filter-strength x noise-var on a
    3 x 3 grid across the region. Empty when the frame or the profile cannot say."""
    wanted = frame.meta.get("ideal_params")
    names = profile.space.names
    if not wanted or any(k not in names for k in wanted):
        return []
    base = snapped(profile, profile.space.defaults(), wanted)
    knobs = [(k, n) for k, n in IDEAL_DENOISE if k in names]
    grids = [np.linspace(lower[names.index(k)], upper[names.index(k)], n) for k, n in knobs]
    out = []
    for combo in np.array(np.meshgrid(*grids, indexing="ij")).reshape(len(knobs), -1).T if knobs else [()]:
        u = profile.space.encode(base)
        for (k, _), value in zip(knobs, combo, strict=True):
            u[names.index(k)] = value
        out.append(profile.space.decode(u))
    return out


def _crop(frame: RawFrame, size: int) -> RawFrame:
    return frame.center_crop(size, size)


def reference_frame(
    source: Source | str, profile: Profile, size: int | None, seed: int = 0, *, needed_for: str = "scoring"
) -> tuple[RawFrame, np.ndarray]:
    """A held-out image as every scored method sees it: the centre crop (taken before
    unprocessing) named by its source id, and its reference as the 8-bit image scores use."""
    src = resolve_sources([source])[0] if isinstance(source, str) else source
    frame = _frame_for(src, profile, size, seed)
    if frame.reference is None:
        raise InputError(f"{src.id}: {needed_for} needs a reference image (an sRGB or bundled source)")
    return frame, np.round(frame.reference * 255).astype(np.uint8)


REFINE_QUERIES = (1, 4, 10)  # 1: the proxy stage alone, rendered once


def evaluate_predictor(
    run_dir: Path,
    images: list[str],
    out: Path,
    *,
    size: int = 128,
    expert_budget: int = 48,
    oracle_budget: int = 24,
    train_images: int = 4,
    workers: int = 2,
    seed: int = 0,
    renderer: Renderer | None = None,
    refine_queries: tuple[int, ...] = REFINE_QUERIES,
    cache: Path | None = None,
    proxy_steps: int = PROXY_STEPS,
    proxy_run: Path | None = None,
    expert: tuple[ParamDict, float] | None = None,
) -> dict[str, Any]:
    """The table: default, expert, predicted, predicted+K (K device queries of per-image tuning from
    the prediction), ideal (where the source knows its camera) and oracle, every render by
    `renderer` (the run's built-in ISP when None, its renders cached by (image, setting), on disk
    in `cache` when given). predicted+K descends through the run's proxy first (`proxy_steps`
    Adam steps; 0: the device search alone), so predicted+1 is the proxy stage rendered once.
    `expert` (setting, objective) reuses an expert found earlier on the same device and training
    images (refine's rounds): no queries are spent on it again, and the table says 0."""
    check_size(size, size, f"--size {size}")
    model, side, profile = load_predictor(run_dir)
    stage = proxy_stage(side, profile, proxy_steps, proxy_run) if refine_queries else None
    held_frames, train_frames = _scored_frames(images, side, profile, size, seed, train_images)
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    isp = renderer or CachedRenderer(BuiltinRenderer(profile, run_firmware(side), workers), cache)
    if isinstance(isp, DeviceRenderer) and not isp.raw_injection:
        raise InputError(f"{isp.info.driver}: evaluation needs a device that takes injected RAW frames")
    queries: dict[str, int] = {}
    try:
        default, center, before = profile.space.defaults(), (lower + upper) / 2, isp.calls
        if expert is None:
            expert = optimise(
                isp, profile, [(f, r) for _, f, r in train_frames], lower, upper, expert_budget, center, seed
            )
        expert_params, expert_loss = expert
        queries["expert"] = isp.calls - before
        rows: list[dict[str, Any]] = []
        grid = []
        for name, frame, ref in held_frames:
            row, outputs, used = _evaluate_image(
                isp, profile, model, frame, ref, {"default": default, "expert": expert_params},
                lower, upper, oracle_budget, refine_queries, seed, stage,
            )  # fmt: skip
            for k, n in used.items():
                queries[k] = queries.get(k, 0) + n
            rows.append({"image": name, **row})
            grid.append(_grid_row(name, frame, row, outputs, ref))
    finally:
        if renderer is None:
            isp.close()
    summary, wins = _summarise(rows, refine_queries)
    described = _described(expert_budget, [n for n, _, _ in train_frames], expert_params, expert_loss,
                           oracle_budget, stage, refine_queries)  # fmt: skip
    report = {
        "run": str(run_dir),
        "firmware": run_firmware(side) if renderer is None else None,
        "device": isp.describe(),
        "size": size,
        "held_out_images": [r["image"] for r in rows],
        **described,
        "optimiser": f"CMA-ES (cma {cma.__version__}), popsize 8, inside the dataset's region",
        "summary": summary,
        "wins_over_expert_by_loss": wins,
        "per_image": rows,
        "queries": {"default": len(rows), "predicted": len(rows), **queries},
        "isp_renders": getattr(isp, "renders", isp.calls),
        "margins_db": _margins(summary, refine_queries),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    contact_sheet(grid, tile=150).save(out / "grid.png")
    return report


def _summarise(
    rows: list[dict[str, Any]], refine_queries: tuple[int, ...]
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """(mean PSNR / SSIM / loss per method, per-image wins over the expert by loss)."""
    methods = [m for m in _methods(refine_queries) if all(m in r for r in rows)]
    summary = {m: {key: float(np.mean([r[m][key] for r in rows])) for key in ("psnr", "ssim", "loss")} for m in methods}
    wins = {m: int(sum(r[m]["loss"] < r["expert"]["loss"] for r in rows)) for m in methods if m != "expert"}
    return summary, wins


def _scored_frames(
    images: list[str], side: dict[str, Any], profile: Profile, size: int, seed: int, train_images: int
) -> tuple[list[tuple[str, RawFrame, np.ndarray]], list[tuple[str, RawFrame, np.ndarray]]]:
    """(held-out frames, the expert's training frames), each (id, RAW crop, 8-bit reference). A
    held-out image that shows a training photo, in any draw, is refused. The expert's images: one
    draw of each photo first, then further draws, up to `train_images`."""
    held = resolve_sources(images)
    train_ids = set(side["dataset"]["train_sources"])
    train_photos = {photo_of(i) for i in train_ids}
    leaked = [s.id for s in held if photo_of(s.id) in train_photos]
    if leaked:
        raise InputError(f"held-out images must not show a training photo (any draw): {', '.join(leaked)}")

    def prepared(sources: list[Source]) -> list[tuple[str, RawFrame, np.ndarray]]:
        return [(s.id, *reference_frame(s, profile, size, seed, needed_for="evaluation")) for s in sources]

    by_spread = sorted(train_ids, key=lambda i: (source_from_id(i).draw, i))
    return prepared(held), prepared([source_from_id(i) for i in by_spread[:train_images]])


def _grid_row(
    name: str, frame: RawFrame, row: dict[str, Any], outputs: dict[str, np.ndarray], ref: np.ndarray
) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """One row of the contact sheet: the RAW input, each method's output with its PSNR, the reference."""
    preview = np.clip(frame.normalized()[::2, ::2] ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)
    cells = [("input (RAW)", np.repeat(preview[..., None], 3, axis=2))]
    cells += [(f"{k} {row[k]['psnr']:.1f}dB", v) for k, v in outputs.items()] + [("reference", ref)]
    return _label(name), cells


def _described(
    expert_budget: int,
    train_names: list[str],
    expert: ParamDict,
    expert_loss: float,
    oracle_budget: int,
    stage: Any,
    refine_queries: tuple[int, ...],
) -> dict[str, Any]:
    """What each row of the table is, for the report: budgets, starts, methods."""
    return {
        "expert": {
            "budget_evaluations": expert_budget,
            "method": "zeroth-order tuning on the device (CMA-ES over the training images)",
            "train_images": train_names,
            "params": expert,
            "objective": expert_loss,
        },
        "oracle": {
            "budget_evaluations_per_image": oracle_budget,
            "start": "best of default, expert, predicted, predicted+K and ideal",
        },
        "ideal": {
            "what": "the unprocessing draw's exact inverse (white balance, colour matrix) with a "
            "3 x 3 filter-strength x noise-var search across the region",
            "queries_per_image": int(np.prod([n for _, n in IDEAL_DENOISE])),
        },
        "refine": {
            "method": ("descent through the proxy from the predicted setting, rendered once, then " if stage else "")
            + "(1+1)-ES with the one-fifth rule, in the region",
            "proxy_stage": stage.describe() if stage else None,
            "queries_per_image": list(refine_queries),
        },
    }


def _margins(summary: dict[str, dict[str, float]], refine_queries: tuple[int, ...]) -> dict[str, float]:
    """PSNR differences between rows, in dB (the figures the goals are stated in)."""
    psnr_of = {m: s["psnr"] for m, s in summary.items()}
    out = {
        "predicted_minus_expert": psnr_of["predicted"] - psnr_of["expert"],
        "expert_minus_default": psnr_of["expert"] - psnr_of["default"],
        "oracle_minus_predicted": psnr_of["oracle"] - psnr_of["predicted"],
    }
    if "ideal" in psnr_of:
        out["ideal_minus_predicted"] = psnr_of["ideal"] - psnr_of["predicted"]
    for k in refine_queries:
        out[f"oracle_minus_predicted+{k}"] = psnr_of["oracle"] - psnr_of[f"predicted+{k}"]
    return out


def _methods(refine_queries: tuple[int, ...]) -> list[str]:
    return ["default", "expert", "predicted", *(f"predicted+{k}" for k in refine_queries), "ideal", "oracle"]


def _label(source_id: str) -> str:
    """A short name for a contact-sheet row: the file's name (not its folder), draws kept."""
    base = photo_of(source_id)
    name = base.removeprefix("bundled:").rsplit("/", 1)[-1]
    return name + source_id[len(base) :]


def _evaluate_image(
    isp: Renderer,
    profile: Profile,
    model: torch.nn.Module,
    frame: RawFrame,
    ref: np.ndarray,
    fixed: dict[str, ParamDict],
    lower: np.ndarray,
    upper: np.ndarray,
    oracle_budget: int,
    refine_queries: tuple[int, ...],
    seed: int,
    stage: ProxyStage | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, int]]:
    """One held-out image: every method's setting, output and score, and the queries each used."""
    name = frame.source or "image"
    settings = {**fixed, "predicted": predict_params(model, profile, frame)}
    outputs = dict(zip(settings, isp.render([(frame, p) for p in settings.values()], [name] * 3), strict=True))
    scores = {k: score(v, ref) for k, v in outputs.items()}
    used: dict[str, int] = {}
    for k in refine_queries:
        key = f"predicted+{k}"
        settings[key], _, used[key], best_out = refine(
            isp,
            profile,
            frame,
            ref,
            settings["predicted"],
            lower,
            upper,
            k,
            seed,
            start_loss=scores["predicted"]["loss"],
            stage=stage,
        )
        outputs[key] = outputs["predicted"] if best_out is None else best_out
        scores[key] = score(outputs[key], ref)
    ideal = best_ideal(isp, profile, frame, ref, lower, upper)
    if ideal is not None:
        settings["ideal"], outputs["ideal"], used["ideal"] = ideal
        scores["ideal"] = score(outputs["ideal"], ref)
    # The oracle starts from the best of everything else on this very image: an upper bound.
    start = min(scores, key=lambda m: scores[m]["loss"])
    oracle, oracle_loss = optimise(isp, profile, [(frame, ref)], lower, upper, oracle_budget,
                                   profile.space.encode(settings[start]), seed)  # fmt: skip
    if oracle_loss >= scores[start]["loss"]:
        oracle = settings[start]  # encoding the start into the region box must not lose it
    used["oracle"] = oracle_budget
    outputs["oracle"] = isp.render([(frame, oracle)], [name])[0]
    scores["oracle"] = score(outputs["oracle"], ref)
    row: dict[str, Any] = {**scores, "predicted_params": settings["predicted"]}
    return row, outputs, used


def markdown(report: dict[str, Any]) -> str:
    methods = [m for m in _methods(tuple(report["refine"]["queries_per_image"])) if m in report["summary"]]
    dev = report.get("device") or {}
    where = (
        f"{report['firmware']} firmware"
        if report.get("firmware")
        else f"device {dev.get('driver')} {dev.get('model', '')}"
    )
    q = report["queries"]
    lines = [
        f"# Predictor evaluation on the real ISP ({where.strip()}, {report['size']}px crops)",
        "",
        f"Expert: zeroth-order tuning on the device, CMA-ES with {report['expert']['budget_evaluations']} "
        f"queries over {len(report['expert']['train_images'])} training images. "
        f"Oracle: {report['oracle']['budget_evaluations_per_image']} queries per held-out image, started from the "
        "best other setting (an upper bound, not a method). Ideal: the camera's own inverse with a 3 x 3 denoise "
        "search, where the source knows its camera. predicted+K: K queries of per-image tuning from the prediction.",
        "",
        "| method | device queries | mean PSNR (dB) | mean SSIM | mean L1 + (1 - SSIM), optimised |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        s = report["summary"][m]
        lines.append(f"| {m} | {q.get(m, '')} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['loss']:.4f} |")
    lines += ["", "| image | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for r in report["per_image"]:
        lines.append(
            f"| {_label(r['image'])} | "
            + " | ".join(f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.3f}" for m in methods)
            + " |"
        )
    mg = report["margins_db"]
    lines += [
        "",
        f"Predicted - expert: {mg['predicted_minus_expert']:+.2f} dB; "
        f"expert - default: {mg['expert_minus_default']:+.2f} dB; "
        f"oracle - predicted: {mg['oracle_minus_predicted']:+.2f} dB"
        + (f"; ideal - predicted: {mg['ideal_minus_predicted']:+.2f} dB." if "ideal_minus_predicted" in mg else "."),
    ]
    return "\n".join(lines) + "\n"


def _frame_for(source: Source, profile: Profile, size: int | None, seed: int = 0) -> RawFrame:
    if size:
        check_size(size, size, f"--size {size}")
    return replace(load_source(source, profile, seed, crop=size or None), source=source.id)


def render_prediction(
    run_dir: Path, input_path: str, out_png: Path, size: int | None = None, renderer: Renderer | None = None
) -> ParamDict:
    """`hil-tune predict`: predict for one input and render it on the device (the run's built-in
    ISP when no renderer is given); write the PNG. A device that cannot take an injected RAW frame
    is asked for a live frame first, and the RAW it returns is what the predictor sees."""
    model, side, profile = load_predictor(run_dir)
    if isinstance(renderer, DeviceRenderer) and not renderer.raw_injection:
        _, raw = renderer.capture(None, renderer.driver.get_params(), "live frame")
        if raw is None:
            raise InputError(f"{renderer.info.driver}: the live frame came without its RAW; nothing to predict from")
        frame = _crop(raw, size) if size else raw
        params = predict_params(model, profile, frame)
        image = renderer.capture(None, params, "live frame")[0]
    else:
        frame = _frame_for(resolve_sources([input_path])[0], profile, size)
        params = predict_params(model, profile, frame)
        isp = renderer or BuiltinRenderer(profile, run_firmware(side), workers=1)
        try:
            image = isp.render([(frame, params)], [frame.source])[0]
        finally:
            if renderer is None:
                isp.close()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out_png)
    return params


def tune_image(
    run_dir: Path,
    input_path: str,
    renderer: Renderer,
    queries: int,
    size: int | None = None,
    seed: int = 0,
    proxy_steps: int = PROXY_STEPS,
    proxy_run: Path | None = None,
) -> dict[str, Any]:
    """`hil-tune tune`: per-image tuning on the device, warm-started at the prediction, against the
    input's reference image: the best setting found within `queries` further renders, and scores.
    The first of them renders the descent through the proxy (`proxy_steps`; 0: none)."""
    model, side, profile = load_predictor(run_dir)
    stage = proxy_stage(side, profile, proxy_steps, proxy_run) if queries > 0 else None
    frame, ref = reference_frame(input_path, profile, size, needed_for="tuning")
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    predicted = predict_params(model, profile, frame)
    before = renderer.calls
    first = renderer.render([(frame, predicted)], [frame.source])[0]
    start = score(first, ref)
    best, _, _, out = refine(
        renderer, profile, frame, ref, predicted, lower, upper, queries, seed, start_loss=start["loss"], stage=stage
    )
    final = score(first if out is None else out, ref)
    return {"input": input_path, "predicted": predicted, "predicted_score": start, "best": best,
            "best_score": final, "queries": renderer.calls - before, "device": renderer.describe(),
            "proxy_stage": stage.describe() if stage else None}  # fmt: skip
