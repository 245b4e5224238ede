"""Per-image prediction on the real ISP, and the evaluation table against fixed settings.

Every number here comes from the real ISP (the paper's inference stage: predicted values are
snapped to the profile's grid and rendered by the device, not by the proxy):
- default: the profile's defaults;
- expert: the single fixed setting that is best on the *training* images, found by CMA-ES (the
  `cma` package) on the real ISP inside the dataset's region, with a stated budget;
- oracle: the same optimiser per held-out image, started from the expert setting, with a stated
  budget: an upper bound for any per-image method, not a method;
- predicted: ours.
The objective and the reported figures compare against the reference image: L1 + (1 - SSIM) is
optimised, PSNR and SSIM are reported.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
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
from hil_tune.isp.foreign import isp_for
from hil_tune.params import ParamDict
from hil_tune.profiles import Profile
from hil_tune.raw import RawFrame, pack4
from hil_tune.train.predictor_train import load_predictor
from hil_tune.ui import contact_sheet


def predict_params(model: torch.nn.Module, profile: Profile, frame: RawFrame) -> ParamDict:
    """Predicted parameters for one frame, snapped to the grid (nearest value, choices by bin)."""
    packed = torch.from_numpy(np.ascontiguousarray(pack4(frame.normalized(), frame.cfa).transpose(2, 0, 1)))[None]
    with torch.no_grad():
        u = model(packed)[0].numpy()
    return profile.space.decode(u)


def _firmware(side: dict[str, Any]) -> str:
    return DatasetReader(side["dataset"]["path"]).firmware_variant()


# -- the real ISP in worker processes (a board would be driven through its driver instead) ----------

_isp: Any = None


def _init(profile_data: dict[str, Any], firmware: str) -> None:
    global _isp
    _isp = isp_for(firmware, Profile.model_validate(profile_data))


def _render(job: tuple[RawFrame, ParamDict]) -> np.ndarray:
    return _isp.run_frame(*job)


def score(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a, b = output.astype(np.float64) / 255, reference.astype(np.float64) / 255
    mse = float(np.mean((a - b) ** 2))
    s = float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))
    return {"psnr": 10 * np.log10(1 / max(mse, 1e-10)), "ssim": s, "loss": float(np.abs(a - b).mean()) + 1 - s}


class RealISP:
    def __init__(self, profile: Profile, firmware: str, workers: int) -> None:
        self.pool = ProcessPoolExecutor(
            workers, initializer=_init, initargs=(profile.model_dump(mode="json"), firmware)
        )
        self.calls = 0

    def render(self, jobs: list[tuple[RawFrame, ParamDict]]) -> list[np.ndarray]:
        self.calls += len(jobs)
        return list(self.pool.map(_render, jobs))

    def close(self) -> None:
        self.pool.shutdown()


def optimise(
    isp: RealISP,
    profile: Profile,
    frames: list[tuple[RawFrame, np.ndarray]],
    lower: np.ndarray,
    upper: np.ndarray,
    budget: int,
    x0: np.ndarray,
    seed: int,
) -> tuple[ParamDict, float]:
    """CMA-ES over the encoded region box; the mean loss over `frames` on the real ISP. x0 counts."""
    span = upper - lower
    scale = np.where(span > 0, span, 1.0)

    def loss_of(u: np.ndarray) -> float:
        params = profile.space.decode(np.clip(u, lower, upper))
        outs = isp.render([(f, params) for f, _ in frames])
        return float(np.mean([score(o, ref)["loss"] for o, (_, ref) in zip(outs, frames, strict=True)]))

    best_u, best = np.clip(x0, lower, upper), loss_of(np.clip(x0, lower, upper))
    used = 1
    es = cma.CMAEvolutionStrategy(
        ((best_u - lower) / scale).tolist(), 0.25, {"bounds": [0, 1], "seed": seed + 1, "verbose": -9, "popsize": 8}
    )
    while used < budget:
        xs = es.ask()[: budget - used]
        losses = [loss_of(lower + np.asarray(x) * scale) for x in xs]
        used += len(xs)
        if len(xs) == es.popsize:
            es.tell(xs, losses)
        i = int(np.argmin(losses))
        if losses[i] < best:
            best, best_u = losses[i], lower + np.asarray(xs[i]) * scale
    return profile.space.decode(best_u), best


def _crop(frame: RawFrame, size: int) -> RawFrame:
    return frame.center_crop(size, size)


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
) -> dict[str, Any]:
    model, side, profile = load_predictor(run_dir)
    held = resolve_sources(images)
    train_ids = set(side["dataset"]["train_sources"])
    train_photos = {photo_of(i) for i in train_ids}
    leaked = [s.id for s in held if photo_of(s.id) in train_photos]
    if leaked:
        raise InputError(f"held-out images must not show a training photo (any draw): {', '.join(leaked)}")
    firmware = _firmware(side)
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])

    def prepared(sources: list[Source]) -> list[tuple[str, RawFrame, np.ndarray]]:
        out_ = []
        for s in sources:
            frame = _crop(load_source(s, profile, seed), size)
            if frame.reference is None:
                raise InputError(f"{s.id}: no reference image (use sRGB or bundled sources)")
            out_.append((s.id, frame, np.round(frame.reference * 255).astype(np.uint8)))
        return out_

    held_frames = prepared(held)
    # The expert's images: one draw of each photo first, then further draws, up to `train_images`.
    by_spread = sorted(train_ids, key=lambda i: (source_from_id(i).draw, i))
    train_frames = prepared([source_from_id(i) for i in by_spread[:train_images]])
    isp = RealISP(profile, firmware, workers)
    try:
        default = profile.space.defaults()
        center = (lower + upper) / 2
        expert, expert_loss = optimise(
            isp, profile, [(f, r) for _, f, r in train_frames], lower, upper, expert_budget, center, seed
        )
        rows: list[dict[str, Any]] = []
        grid = []
        for name, frame, ref in held_frames:
            predicted = predict_params(model, profile, frame)
            fixed = {"default": default, "expert": expert, "predicted": predicted}
            fixed_out = dict(zip(fixed, isp.render([(frame, p) for p in fixed.values()]), strict=True))
            # The oracle starts from the best of the three on this very image: an upper bound.
            start = min(fixed, key=lambda k: score(fixed_out[k], ref)["loss"])
            oracle, _ = optimise(isp, profile, [(frame, ref)], lower, upper, oracle_budget,
                                 profile.space.encode(fixed[start]), seed)  # fmt: skip
            outputs = {**fixed_out, "oracle": isp.render([(frame, oracle)])[0]}
            row = {"image": name, **{k: score(v, ref) for k, v in outputs.items()}, "predicted_params": predicted}
            rows.append(row)
            preview = np.clip(frame.normalized()[::2, ::2] ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)
            cells = [("input (RAW)", np.repeat(preview[..., None], 3, axis=2))]
            cells += [(f"{k} {row[k]['psnr']:.1f}dB", v) for k, v in outputs.items()] + [("reference", ref)]
            grid.append((name.removeprefix("bundled:"), cells))
    finally:
        isp.close()
    methods = ("default", "expert", "predicted", "oracle")
    summary = {m: {key: float(np.mean([r[m][key] for r in rows])) for key in ("psnr", "ssim", "loss")} for m in methods}
    report = {
        "run": str(run_dir),
        "firmware": firmware,
        "size": size,
        "held_out_images": [r["image"] for r in rows],
        "expert": {
            "budget_evaluations": expert_budget,
            "train_images": [n for n, _, _ in train_frames],
            "params": expert,
            "objective": expert_loss,
        },
        "oracle": {"budget_evaluations_per_image": oracle_budget, "start": "best of default, expert, predicted"},
        "optimiser": f"CMA-ES (cma {cma.__version__}), popsize 8, inside the dataset's region",
        "summary": summary,
        "per_image": rows,
        "isp_renders": isp.calls,
        "margins_db": {
            "predicted_minus_expert": summary["predicted"]["psnr"] - summary["expert"]["psnr"],
            "expert_minus_default": summary["expert"]["psnr"] - summary["default"]["psnr"],
            "oracle_minus_predicted": summary["oracle"]["psnr"] - summary["predicted"]["psnr"],
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    contact_sheet(grid, tile=150).save(out / "grid.png")
    return report


def markdown(report: dict[str, Any]) -> str:
    methods = ("default", "expert", "predicted", "oracle")
    lines = [
        f"# Predictor evaluation on the real ISP ({report['firmware']} firmware, {report['size']}px crops)",
        "",
        f"Expert: CMA-ES, {report['expert']['budget_evaluations']} evaluations on "
        f"{len(report['expert']['train_images'])} training images. "
        f"Oracle: {report['oracle']['budget_evaluations_per_image']} evaluations per held-out image "
        "(an upper bound, not a method).",
        "",
        "| method | mean PSNR (dB) | mean SSIM | mean L1 + (1 - SSIM), optimised |",
        "|---|---|---|---|",
    ]
    for m in methods:
        s = report["summary"][m]
        lines.append(f"| {m} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['loss']:.4f} |")
    lines += ["", "| image | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for r in report["per_image"]:
        lines.append(
            f"| {r['image']} | " + " | ".join(f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.3f}" for m in methods) + " |"
        )
    mg = report["margins_db"]
    lines += [
        "",
        f"Predicted - expert: {mg['predicted_minus_expert']:+.2f} dB; "
        f"expert - default: {mg['expert_minus_default']:+.2f} dB; "
        f"oracle - predicted: {mg['oracle_minus_predicted']:+.2f} dB.",
    ]
    return "\n".join(lines) + "\n"


def render_prediction(run_dir: Path, input_path: str, out_png: Path, size: int | None = None) -> ParamDict:
    """`hil-tune predict`: predict for one input, render it on the real ISP, write the PNG."""
    model, side, profile = load_predictor(run_dir)
    source = resolve_sources([input_path])[0]
    frame = load_source(source, profile, 0)
    if size:
        frame = _crop(frame, size)
    params = predict_params(model, profile, frame)
    image = isp_for(_firmware(side), profile).run_frame(frame, params)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out_png)
    return params
