"""The active loop: render where the predictor goes, refine the proxy there, retrain the predictor.

Why: a predictor trained through a frozen proxy drifts to settings where the proxy is wrong. The
sweep covers its region evenly; the predictor does not stay there evenly. Each round renders the
predictor's own choices on the device (K samples per training image around the setting it chose
for that very image), fine-tunes the proxy on the first sweep plus every round's samples, and
fine-tunes the predictor through it. Every render goes through the driver, so the loop closes on
whatever device the user has: the simulator, a board on a serial line, a plug-in.

A refine folder:
    refine.json              what was asked (inputs and settings); a resume must ask the same
    round-0/eval/            the starting predictor's table on the device, and the proxy's fidelity
    round-R/centres.json     the predictor's setting for each training image's patches
    round-R/samples/         a dataset folder of samples around those, captured through the driver
    round-R/proxy_before.json  the previous proxy against the device on those new samples
    round-R/proxy/           the proxy fine-tuned on the first sweep plus rounds 1..R
    round-R/predictor/       the predictor fine-tuned through it
    round-R/eval/            the table on the device, and the proxy's fidelity at the predictions
    rounds.json, rounds.png  per-round figures (refine_report)

Each step's result is written atomically or is itself resumable (capture, training checkpoints),
and a step whose result exists is not run again: kill -9 anywhere, rerun with `resume`, and the
result is the uninterrupted run's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hil_tune.atomic import atomic_write
from hil_tune.capture.dataset import DatasetFolder, DatasetReader
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import Source, load_source, resolve_sources
from hil_tune.drivers.registry import create_driver
from hil_tune.errors import HilTuneError, InputError
from hil_tune.metrics import psnr, psnr_batch
from hil_tune.models.predictor import PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.params import Region
from hil_tune.raw import patches
from hil_tune.refine_report import round_record, write_rounds
from hil_tune.train import checkpoint
from hil_tune.train.data import SweepDataset
from hil_tune.train.predictor_eval import evaluate_predictor, predict_params, reference_frame
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.proxy_eval import ProxyRunner
from hil_tune.train.proxy_train import TrainConfig, load_proxy, train_proxy
from hil_tune.train.renderers import DeviceRenderer

REFINE_VERSION = 1


@dataclass(frozen=True)
class RefineSettings:
    rounds: int = 3
    samples_per_image: int = 4  # device samples per training image and round, around its prediction
    radius: float = 0.1  # half-width of the box around each prediction, encoded units
    patch: int = 64  # pixels a side of each new sample
    proxy_epochs: int = 5
    predictor_epochs: int = 8
    eval_size: int = 64  # centre crop of each held-out image
    expert_budget: int = 48  # CMA-ES device queries, spent once (round 0) and reused
    oracle_budget: int = 24  # device queries per held-out image and round
    seed: int = 0
    retries: int = 3


@dataclass(frozen=True)
class RefineInputs:
    proxy: Path
    predictor: Path
    driver: str
    driver_options: dict[str, Any] = field(default_factory=dict)
    train_images: list[str] = field(default_factory=list)  # empty: the predictor's own
    eval_images: list[str] = field(default_factory=list)  # empty: the proxy's held-out photos


class Refine:
    """One refine folder, run round by round (`run`); every step checks whether it is done."""

    def __init__(
        self,
        out: Path,
        inputs: RefineInputs,
        settings: RefineSettings,
        *,
        resume: bool = False,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        if settings.rounds < 0 or settings.samples_per_image < 1:
            raise InputError("--rounds must be 0 or more and --samples-per-image at least 1")
        check_run_dirs(inputs.proxy, inputs.predictor)
        self.out, self.settings, self.on_step = out, settings, on_step or (lambda _: None)
        _, self.predictor_side, self.profile = load_predictor(inputs.predictor)
        self.proxy_side = load_proxy(inputs.proxy)[1]
        if self.proxy_side["profile_sha256"] != self.profile.sha256:
            raise InputError(f"{inputs.proxy} and {inputs.predictor} were trained on different profiles")
        side = self.predictor_side
        self.inputs = replace(
            inputs,
            proxy=inputs.proxy.resolve(),
            predictor=inputs.predictor.resolve(),
            train_images=inputs.train_images or list(side["dataset"]["train_sources"]),
            eval_images=inputs.eval_images or list(side["dataset"]["held_out_sources"]),
        )
        if not self.inputs.eval_images:
            raise InputError("no held-out images: give --eval-images (the proxy held out no photo)")
        self.sweep = Path(self.proxy_side["dataset"]["path"])
        if not (self.sweep / "plan.json").is_file():
            raise InputError(f"the proxy's sweep {self.sweep} is not there: fine-tuning the proxy needs its data")
        box = side["region"]
        self.region = Region(name="predictor", lower=tuple(box["lower"]), upper=tuple(box["upper"]))
        self._start(resume)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _start(self, resume: bool) -> None:
        asked = {"version": REFINE_VERSION, "inputs": _jsonable(asdict(self.inputs)), "settings": asdict(self.settings)}
        record = self.out / "refine.json"
        if record.exists():
            if not resume:
                raise InputError(f"{self.out} already holds a refine run: add --resume to continue it")
            held = json.loads(record.read_text())
            same = {k: v for k, v in held["settings"].items() if k != "rounds"} == {
                k: v for k, v in asked["settings"].items() if k != "rounds"
            }
            if held["inputs"] != asked["inputs"] or not same:
                raise InputError(f"--resume: {record} was asked with other inputs or settings (only --rounds may grow)")
        elif self.out.exists() and any(self.out.iterdir()):
            raise InputError(f"{self.out} exists and is not empty; choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(asked, indent=2).encode())

    def round_dir(self, r: int) -> Path:
        return self.out / f"round-{r}"

    def proxy_run(self, r: int) -> Path:
        return self.inputs.proxy if r == 0 else self.round_dir(r) / "proxy"

    def predictor_run(self, r: int) -> Path:
        return self.inputs.predictor if r == 0 else self.round_dir(r) / "predictor"

    def _timed(self, r: int, step: str, work: Callable[[], None]) -> None:
        """Run a step, adding its seconds to the round's steps.json (a resumed step adds its rest)."""
        self.on_step(f"round {r}: {step}")
        start = time.perf_counter()
        work()
        path = self.round_dir(r) / "steps.json"
        steps = json.loads(path.read_text()) if path.exists() else {}
        steps[step] = round(steps.get(step, 0.0) + time.perf_counter() - start, 3)
        atomic_write(path, json.dumps(steps, indent=2).encode())

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Every round not yet done; returns the per-round records (also in rounds.json)."""
        for r in range(self.settings.rounds + 1):
            if r > 0:
                self._round(r)
            if not (self.round_dir(r) / "eval" / "fidelity.json").exists():
                self._timed(r, "evaluate", lambda r=r: self._evaluate(r))
            records = [round_record(self.round_dir(k), k) for k in range(r + 1)]
            write_rounds(self.out, records)
        return records

    def _round(self, r: int) -> None:
        rd = self.round_dir(r)
        rd.mkdir(exist_ok=True)
        if not (rd / "centres.json").exists():
            self._timed(r, "predict", lambda: self._predict(r))
        if not _complete(rd / "samples"):
            self._timed(r, "capture", lambda: self._capture(r))
        if not (rd / "proxy_before.json").exists():
            self._timed(r, "proxy before", lambda: self._proxy_before(r))
        if not (rd / "proxy" / "model.pt").exists():
            self._timed(r, "proxy fine-tune", lambda: self._finetune_proxy(r))
        if not (rd / "predictor" / "model.pt").exists():
            self._timed(r, "predictor fine-tune", lambda: self._finetune_predictor(r))

    # -- the steps --------------------------------------------------------------------------------

    def _train_sources(self) -> list[Source]:
        return resolve_sources(self.inputs.train_images)

    def _plan_seed(self, r: int) -> int:
        """Round r's plan seed: each round sees other camera draws of the training photos."""
        return self.settings.seed + r

    def _predict(self, r: int) -> None:
        """The previous predictor's setting for each training image's first K patches: the very
        patches (same camera draw, the plan's seed) the round's plan puts its samples on, in order."""
        model = load_predictor(self.predictor_run(r - 1))[0]
        k = self.settings.samples_per_image
        centres = {}
        for source in self._train_sources():
            frame = load_source(source, self.profile, self._plan_seed(r))
            windows = patches(frame, self.settings.patch)[:k]
            centres[source.id] = [predict_params(model, self.profile, w) for w in windows]
        atomic_write(self.round_dir(r) / "centres.json", json.dumps(centres, indent=2).encode())

    def _capture(self, r: int) -> None:
        root = self.round_dir(r) / "samples"
        folder = DatasetFolder(root)
        if not folder.exists():
            centres = json.loads((self.round_dir(r) / "centres.json").read_text())
            plan = build_plan(
                self.profile, self._train_sources(), samples_per_source=self.settings.samples_per_image,
                seed=self._plan_seed(r), patch=self.settings.patch, around=centres,
                radius=self.settings.radius, within=self.region, shard_size=16,
            )  # fmt: skip
            folder.create(plan)
        settings = CaptureSettings(self.inputs.driver, dict(self.inputs.driver_options), retries=self.settings.retries)
        result = run_capture(root, settings)
        if result.failed:
            first = min(result.failed)
            raise HilTuneError(
                f"round {r}: {len(result.failed)} sample(s) failed on the device (first, {first}: "
                f"{result.failed[first]}); rerun with --resume to retry them"
            )

    def _proxy_before(self, r: int) -> None:
        """How far the previous proxy was from the device where the predictor went: its PSNR
        against the device on the round's new samples, before it trains on them."""
        proxy = load_proxy(self.proxy_run(r - 1), self.profile)[0]
        values = _proxy_psnrs(proxy, SweepDataset(self.round_dir(r) / "samples"))
        body = {"proxy": str(self.proxy_run(r - 1)), "samples": len(values), "psnr": _stats(values)}
        atomic_write(self.round_dir(r) / "proxy_before.json", json.dumps(body, indent=2).encode())

    def _finetune_proxy(self, r: int) -> None:
        side = self.proxy_side
        # the first run's seed: it decides the held-out photos, which must stay held out
        cfg = replace(TrainConfig(**side["train"]), epochs=self.settings.proxy_epochs)
        data = [self.sweep, *(self.round_dir(k) / "samples" for k in range(1, r + 1))]
        out = self.round_dir(r) / "proxy"
        train_proxy(data, out, self.profile, ProxyConfig(**side["model"]), cfg,
                    resume=(out / "checkpoint.pt").exists(), init=self.proxy_run(r - 1))  # fmt: skip

    def _finetune_predictor(self, r: int) -> None:
        side = self.predictor_side
        cfg = replace(
            PredictorTrainConfig(**side["train"]), epochs=self.settings.predictor_epochs, seed=self.settings.seed + r
        )
        images = self.inputs.train_images if side["dataset"].get("trained_on") == "image crops" else None
        out, model = self.round_dir(r) / "predictor", PredictorConfig.from_dict(side["model"])
        train_predictor(
            Path(side["dataset"]["path"]), self.proxy_run(r), side["task"], out, model,
            cfg, resume=(out / "checkpoint.pt").exists(), images=images, init=self.predictor_run(r - 1),
        )  # fmt: skip

    def _evaluate(self, r: int) -> None:
        """The held-out table through the device (the expert found in round 0, reused after), then
        the proxy against the device at the predictor's own settings on the held-out images."""
        s, out = self.settings, self.round_dir(r) / "eval"
        expert = None
        if r > 0:
            first = json.loads((self.round_dir(0) / "eval" / "report.json").read_text())["expert"]
            expert = (first["params"], float(first["objective"]))
        renderer = DeviceRenderer(create_driver(self.inputs.driver, self.profile, **self.inputs.driver_options))
        try:
            evaluate_predictor(
                self.predictor_run(r), self.inputs.eval_images, out, size=s.eval_size, expert_budget=s.expert_budget,
                oracle_budget=s.oracle_budget, seed=s.seed, renderer=renderer, refine_queries=(), expert=expert,
            )  # fmt: skip
            fidelity = self._fidelity_at_predictions(r, renderer)
        finally:
            renderer.close()
        atomic_write(out / "fidelity.json", json.dumps(fidelity, indent=2).encode())

    def _fidelity_at_predictions(self, r: int, renderer: DeviceRenderer) -> dict[str, Any]:
        model = load_predictor(self.predictor_run(r))[0]
        proxy = ProxyRunner(load_proxy(self.proxy_run(r), self.profile)[0], self.profile)
        values = []
        for image in self.inputs.eval_images:
            frame, _ = reference_frame(image, self.profile, self.settings.eval_size, self.settings.seed)
            setting = predict_params(model, self.profile, frame)
            device = renderer.render([(frame, setting)], [image])[0].astype(np.float64) / 255
            values.append(psnr(proxy(frame, [setting])[0].astype(np.float64), device))
        return {"proxy": str(self.proxy_run(r)), "predictor": str(self.predictor_run(r)), "psnr": _stats(values),
                "per_image": dict(zip(self.inputs.eval_images, values, strict=True)),
                "queries": len(values)}  # fmt: skip


def _complete(root: Path) -> bool:
    """A dataset folder whose every planned sample is written."""
    if not DatasetFolder(root).exists():
        return False
    reader = DatasetReader(root)
    return len(reader) == len(reader.plan.rows) and not reader.failed()


@torch.no_grad()
def _proxy_psnrs(proxy: torch.nn.Module, ds: SweepDataset) -> list[float]:
    """Per-sample PSNR of the proxy against the device, in batches (the metric proxy training uses)."""
    values = [psnr_batch(proxy(b["mosaic"], b["cfa"], b["encoded"]), b["output"]) for b in DataLoader(ds, batch_size=8)]
    return torch.cat(values).tolist()


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "worst": None, "n": 0}
    return {"mean": float(np.mean(values)), "worst": float(np.min(values)), "n": len(values)}


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))


def check_run_dirs(*runs: Path) -> None:
    """Clear errors for run folders that are not there (before anything is written)."""
    for run in runs:
        if not (run / "model.pt").is_file():
            raise checkpoint.CheckpointError(f"{run}: no trained model here (model.pt)")
