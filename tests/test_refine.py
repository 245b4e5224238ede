"""The active loop (`hil-tune refine`): per-image resampling plans, proxy fine-tuning on the first
sweep plus the rounds' samples, the rounds on sim and on the emulated board over a real pty, and a
run killed with SIGKILL at three points and resumed, which must equal an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from capture_helpers import BOARD_FAST, FAST_PROFILE, fast_sweep
from plugins import INK_DRIVER, install_plugin

from hil_tune.capture.dataset import DatasetReader
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.serial_pty import SerialEmulator
from hil_tune.errors import InputError, ParameterError
from hil_tune.isp import SyntheticISP
from hil_tune.models.predictor import PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.refine import Refine, RefineInputs, RefineSettings
from hil_tune.train import checkpoint
from hil_tune.train.data import SweepDataset, SweepUnion
from hil_tune.train.predictor_eval import predict_params
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.proxy_train import TrainConfig, make_split, train_proxy

TINY = RefineSettings(rounds=2, samples_per_image=2, patch=32, proxy_epochs=2, predictor_epochs=2, eval_size=32,
                      expert_budget=4, oracle_budget=2)  # fmt: skip


def _start(tmp: Path, profile_text: str = FAST_PROFILE) -> tuple[Path, object]:
    """A fast sweep, a proxy and a predictor trained on it: the loop's starting point."""
    root, prof = fast_sweep(tmp, profile_text)
    train_proxy(root, tmp / "proxy", prof, ProxyConfig(width=8, depth=2),
                TrainConfig(epochs=1, batch=8, optimizer="adam", lr=1e-3, probe_steps=4))  # fmt: skip
    train_predictor(root, tmp / "proxy", "reference", tmp / "pred", PredictorConfig(dim=32),
                    PredictorTrainConfig(epochs=1, batch=8))  # fmt: skip
    return root, prof


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    root, prof = _start(tmp)
    return tmp, root, prof


@pytest.fixture(scope="module")
def refined(start):
    tmp, _, _ = start
    inputs = RefineInputs(tmp / "proxy", tmp / "pred", "sim", {"sensor_size": 32})
    records = Refine(tmp / "refine", inputs, TINY).run()
    return tmp / "refine", records


def test_per_source_centres_sample_around_each_sources_own_centre_inside_the_region(start):
    _, _, prof = start
    sources = resolve_sources(["bundled:coffee", "bundled:rocket"])
    space = prof.space
    region = prof.get_region("fast")
    at = [space.decode(np.full(len(space), v)) for v in (0.2, 0.8, 0.5)]
    centres = {"bundled:coffee": at[:1], "bundled:rocket": at[1:]}
    plan = build_plan(prof, sources, samples_per_source=6, patch=32, around=centres, radius=0.05, within=region)
    lo, hi = np.asarray(region.lower), np.asarray(region.upper)
    for row in plan.rows:
        u = np.asarray(row.encoded)
        own = [np.clip(space.encode(c), lo, hi) for c in centres[row.source]]
        centre = own[(row.index - (0 if row.source == "bundled:coffee" else 6)) % len(own)]
        assert np.all(u >= lo - 1e-9) and np.all(u <= hi + 1e-9)  # never outside the predictor's region
        assert np.max(np.abs(u - centre)) <= 0.05 + 0.02  # its own centre's box (plus the grid's snap)
    assert plan.sampling_box().lower == region.lower  # readers confine a predictor to the same box
    assert plan.region.centers_by_source["bundled:rocket"][1] == centres["bundled:rocket"][1]
    with pytest.raises(ParameterError, match="no centres for bundled:rocket"):
        build_plan(prof, sources, samples_per_source=2, patch=32, around={"bundled:coffee": centres["bundled:coffee"]})


def test_a_union_of_sweeps_keeps_the_first_sweeps_split(refined, start):
    tmp, root, _ = start
    folder, _ = refined
    alone, both = SweepDataset(root), SweepUnion([root, folder / "round-1" / "samples"])
    cfg = TrainConfig()
    a, b = make_split(alone, cfg), make_split(both, cfg)
    assert a.held_out_sources == b.held_out_sources  # the round's photos do not move the held-out ones
    assert b.val_sources == a.val_sources and b.val_params[: len(a.val_params)] == a.val_params
    assert len(both) == len(alone) + len(DatasetReader(folder / "round-1" / "samples"))
    with pytest.raises(ValueError, match="different profiles"):
        other = tmp / "other"
        other.mkdir(exist_ok=True)
        SweepUnion([root, fast_sweep(other, BOARD_FAST)[0]])


def test_rounds_on_sim_resample_fine_tune_and_measure_on_the_device(refined, start):
    tmp, root, prof = start
    folder, records = refined
    assert [r["round"] for r in records] == [0, 1, 2]
    body = json.loads((folder / "rounds.json").read_text())
    assert body["rounds"] == records and (folder / "rounds.png").stat().st_size > 0
    n_train = len(json.loads((tmp / "pred" / "model.json").read_text())["dataset"]["train_sources"])
    original = json.loads((tmp / "proxy" / "model.json").read_text())
    for r in (1, 2):
        rd = folder / f"round-{r}"
        reader = DatasetReader(rd / "samples")
        assert reader.verify() == [] and len(reader) == 2 * n_train  # K samples per training image
        centres = json.loads((rd / "centres.json").read_text())
        for index in reader.indices:  # every sample lies near its image's prediction, in the region
            row = reader.rows[index]
            own = [prof.space.encode(c) for c in centres[row.source]]
            assert min(np.max(np.abs(np.asarray(row.encoded) - c)) for c in own) <= TINY.radius + 0.02
        for index in reader.indices[:3]:  # each centre was predicted on the very patch captured around it
            row, sample = reader.rows[index], reader.sample(index)
            k = [j for j in reader.indices if reader.rows[j].source == row.source].index(index)
            patch = load_source(resolve_sources([row.source])[0], prof, reader.plan.seed).crop(*row.patch)
            assert np.array_equal(patch.mosaic, sample.raw)
            assert centres[row.source][k % len(centres[row.source])] == predict_params(
                load_predictor(tmp / "pred" if r == 1 else folder / f"round-{r - 1}" / "predictor")[0], prof, patch
            )
        side = json.loads((rd / "proxy" / "model.json").read_text())
        assert side["dataset"]["parts"] == [str(root)] + [
            str(folder / f"round-{k}" / "samples") for k in range(1, r + 1)
        ]
        assert side["init"]["run"] == str((tmp / "proxy" if r == 1 else folder / f"round-{r - 1}" / "proxy").resolve())
        assert side["split"]["held_out_sources"] == original["split"]["held_out_sources"]
        assert "probe" not in side or side["probe"] == {}  # the learnt structure is kept, not probed again
        pred = json.loads((rd / "predictor" / "model.json").read_text())
        assert pred["proxy"]["run"] == str((rd / "proxy").resolve()) and pred["init"]["run"]
        rec = records[r]
        q = rec["device_queries"]
        assert q["capture"] == 2 * n_train and rec["eval_queries"]["expert"] == 0  # the expert is found once
        assert q["total"] == q["capture"] + q["eval"] + q["fidelity"]
        assert rec["previous_proxy_on_new_samples_db"]["n"] == 2 * n_train
    assert records[0]["eval_queries"]["expert"] == TINY.expert_budget * len(
        json.loads((folder / "round-0" / "eval" / "report.json").read_text())["expert"]["train_images"]
    )
    assert records[2]["device_queries"]["cumulative"] == sum(r["device_queries"]["total"] for r in records)
    for rec in records:  # the oracle starts from the best of the others, ideal included
        h = rec["held_out"]
        assert h["oracle"]["loss"] <= min(h[m]["loss"] for m in h if m != "oracle") + 1e-9
        assert rec["proxy_vs_device_at_predicted_db"]["n"] == len(
            json.loads((tmp / "pred" / "model.json").read_text())["dataset"]["held_out_sources"]
        )


def test_a_round_dataset_is_read_like_any_sweep(refined, tmp_path):
    folder, _ = refined
    samples = folder / "round-1" / "samples"
    for args in (["dataset", "verify", str(samples)], ["dataset", "info", str(samples), "--json"]):
        res = subprocess.run([sys.executable, "-m", "hil_tune.cli", *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "hil_tune.cli", "train", "proxy", str(samples), "--out",
                          str(tmp_path / "p"), "--epochs", "1", "--width", "8", "--depth", "2", "--probe-steps", "4"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p" / "model.pt").is_file()


def test_refine_refuses_a_folder_it_did_not_start_and_changed_settings(refined, start, tmp_path):
    tmp, _, _ = start
    folder, _ = refined
    inputs = RefineInputs(tmp / "proxy", tmp / "pred", "sim", {"sensor_size": 32})
    with pytest.raises(InputError, match="add --resume"):
        Refine(folder, inputs, TINY)
    with pytest.raises(InputError, match="other inputs or settings"):
        Refine(folder, inputs, RefineSettings(**{**TINY.__dict__, "radius": 0.2}), resume=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        Refine(tmp_path / "x", inputs, TINY)
    with pytest.raises(checkpoint.CheckpointError, match="no trained model"):
        Refine(tmp_path / "y", RefineInputs(tmp_path, tmp / "pred", "sim"), TINY)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine" and not (tmp_path / "y").exists()


def test_rounds_on_the_emulated_board_over_serial(tmp_path):
    tmp = tmp_path
    _start(tmp, BOARD_FAST)
    fw = BoardFirmware(sensor_size=32, power_on={"filter-strength": 0.0})
    settings = RefineSettings(**{**TINY.__dict__, "rounds": 1})
    with SerialEmulator(fw, link=tmp / "board0"):
        inputs = RefineInputs(tmp / "proxy", tmp / "pred", "serial", {"device": str(tmp / "board0")})
        records = Refine(tmp / "refine", inputs, settings).run()
    samples = DatasetReader(tmp / "refine" / "round-1" / "samples")
    assert samples.verify() == [] and len(samples) == records[1]["device_queries"]["capture"] > 0
    device = samples.sample(samples.indices[0]).meta["device"]
    assert device["driver"] == "serial"  # the round's samples came from the board
    report = json.loads((tmp / "refine" / "round-1" / "eval" / "report.json").read_text())
    assert report["device"]["driver"] == "serial"


def test_rounds_on_a_plug_in_driver_whose_isp_no_firmware_makes(start, tmp_path, monkeypatch):
    """A third-party driver found by entry point (its output the negative of the synthetic ISP's):
    the round's samples and the table come from it, not from a built-in firmware."""
    tmp, _, _ = start
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", "ink_refine", INK_DRIVER, {"ink": "ink_refine:InkDriver"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        inputs = RefineInputs(tmp / "proxy", tmp / "pred", "ink", {"sensor_size": 32})
        records = Refine(tmp_path / "refine", inputs, RefineSettings(**{**TINY.__dict__, "rounds": 1})).run()
    finally:
        sys.modules.pop("ink_refine", None)
    samples = DatasetReader(tmp_path / "refine" / "round-1" / "samples")
    first = samples.sample(samples.indices[0])
    assert first.meta["device"]["driver"] == "ink" and samples.verify() == []
    row = samples.rows[first.index]
    profile = samples.plan.load_profile()
    frame = load_source(resolve_sources([row.source])[0], profile, samples.plan.seed).crop(*row.patch)
    builtin = SyntheticISP(profile).run_frame(frame, first.meta["params_applied"])
    assert np.array_equal(first.output, 255 - builtin)  # the plug-in's render, not a built-in one
    assert records[1]["held_out"]["predicted"]["psnr"] < 15  # scored against references: an inverted ISP is far


# -- kill -9 and resume -------------------------------------------------------------------------


def _cli_refine(tmp: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["refine", "--out", str(out), "--proxy", str(tmp / "proxy"), "--predictor", str(tmp / "pred"),
            "-o", "sensor_size=32", "-o", "latency_s=0.03", "--rounds", "1", "-k", "2", "--patch", "32",
            "--proxy-epochs", "3", "--predictor-epochs", "3", "--eval-size", "32", "--expert-budget", "4",
            "--oracle-budget", "2", *extra]  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "hil_tune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready: object, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():  # type: ignore[operator]
            break
        time.sleep(0.003)
    assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read().decode()}"  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "model.pt")[0]["model"]


def _shards(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").iterdir())}


def test_sigkill_at_three_points_then_resume_equals_an_uninterrupted_run(start, tmp_path):
    tmp, _, _ = start
    whole = _cli_refine(tmp, tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()  # type: ignore[union-attr]
    out = tmp_path / "killed"
    r1 = out / "round-1"
    points = [  # mid-capture, mid proxy fine-tune, mid predictor fine-tune
        lambda: (r1 / "samples" / "pending").is_dir() and any((r1 / "samples" / "pending").iterdir()),
        lambda: (r1 / "proxy" / "checkpoint.pt").exists(),
        lambda: (r1 / "predictor" / "checkpoint.pt").exists(),
    ]
    for k, ready in enumerate(points):
        _kill_when(_cli_refine(tmp, out, *(["--resume"] if k else [])), ready)
    assert not (out / "round-1" / "eval" / "fidelity.json").exists()  # the run was cut short
    resumed = _cli_refine(tmp, out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()  # type: ignore[union-attr]
    a, b = tmp_path / "whole" / "round-1", r1
    assert _shards(a / "samples") == _shards(b / "samples")  # the dataset, byte for byte
    for run in ("proxy", "predictor"):
        wa, wb = _weights(a / run), _weights(b / run)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), run
    ra, rb = (json.loads((d / "rounds.json").read_text())["rounds"] for d in (tmp_path / "whole", out))
    for x, y in zip(ra, rb, strict=True):
        assert (
            x["held_out"] == y["held_out"]
            and x["proxy_vs_device_at_predicted_db"] == y["proxy_vs_device_at_predicted_db"]
        )
        assert x["device_queries"]["total"] == y["device_queries"]["total"]
