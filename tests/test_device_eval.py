"""What was learnt, run on a device through its driver: `predict`, `eval predictor` and `tune` on
sim, on the emulated board over a real pty, and on a plug-in driver registered by entry point whose
ISP is none of the built-in firmwares."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from capture_helpers import BOARD_FAST, fast_sweep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from plugins import INK_DRIVER, install_plugin

from hil_tune.capture.sources import load_source, resolve_sources
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.serial_pty import SerialEmulator
from hil_tune.drivers.registry import create_driver
from hil_tune.drivers.sim import SimDriver
from hil_tune.errors import HilTuneError, InputError
from hil_tune.isp import SyntheticISP
from hil_tune.models.predictor import PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.train.checkpoint import CheckpointError
from hil_tune.train.predictor_eval import evaluate_predictor, refine, render_prediction, score
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.proxy_descent import descend, proxy_stage
from hil_tune.train.proxy_train import TrainConfig, load_proxy, train_proxy
from hil_tune.train.renderers import DeviceRenderer

FAST = {"filter-strength": 0.0}


@pytest.fixture(scope="module")
def board_run(tmp_path_factory):
    """A predictor trained on a sweep of the emulated board's profile (captured on sim), so that the
    serial board, sim and a plug-in can all run it."""
    tmp = tmp_path_factory.mktemp("deval")
    root, prof = fast_sweep(tmp, BOARD_FAST)
    train_proxy(root, tmp / "proxy", prof, ProxyConfig(width=8, depth=2),
                TrainConfig(epochs=1, batch=8, optimizer="adam", lr=1e-3, probe_steps=4))  # fmt: skip
    train_predictor(root, tmp / "proxy", "reference", tmp / "pred", PredictorConfig(dim=32),
                    PredictorTrainConfig(epochs=1, batch=8))  # fmt: skip
    held = json.loads((tmp / "pred" / "model.json").read_text())["dataset"]["held_out_sources"]
    return tmp, prof, held


def _frame(prof, source_id, size):
    frame = load_source(resolve_sources([source_id])[0], prof, 0)
    return frame.center_crop(size, size)


def test_predict_through_sim_renders_what_the_device_renders(board_run, tmp_path):
    tmp, prof, held = board_run
    drv = SimDriver(prof, sensor_size=32, power_on=FAST, settle_frames=2)
    renderer = DeviceRenderer(drv, prof)
    before = drv.get_params()
    try:
        params = render_prediction(tmp / "pred", held[0], tmp_path / "p.png", 32, renderer=renderer)
    finally:
        renderer.close()
    expected = SyntheticISP(prof).run_frame(_frame(prof, held[0], 32), params)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), expected)
    assert renderer.calls == 1
    drv.open()  # what the device held before is what it holds after
    assert drv.get_params() == before


def test_the_run_folder_needs_no_dataset(board_run, tmp_path):
    """The sidecars record the profile, firmware and device: predict and the proxy load with the
    dataset folder gone, and a profile is checked by its hash."""
    tmp, prof, held = board_run
    _, side, _ = load_predictor(tmp / "pred")
    assert side["firmware"] == "synthetic" and side["device"]["driver"] == "sim"
    moved = tmp / "ds-moved"
    (tmp / "ds").rename(moved)
    try:
        render_prediction(tmp / "pred", held[0], tmp_path / "p.png", 32)
        _, proxy_side = load_proxy(tmp / "proxy")  # the proxy's profile comes from its own sidecar
        assert proxy_side["profile_sha256"] == prof.sha256
    finally:
        moved.rename(tmp / "ds")
    # A sidecar whose profile was edited (JPEG quality 10, name kept) is refused, not used silently.
    edited = tmp_path / "proxy"
    shutil.copytree(tmp / "proxy", edited)
    side = json.loads((edited / "model.json").read_text())
    side["profile_data"]["pipeline"]["jpeg_quality"] = 10
    (edited / "model.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="does not match its hash"):
        load_proxy(edited)


@pytest.fixture
def ink_plugin(tmp_path, monkeypatch):
    """A third-party ISP installed the way pip installs one: its output is the negative of the
    synthetic ISP's, which no built-in firmware makes."""
    install_plugin(tmp_path, "ink_isp", INK_DRIVER, {"ink": "ink_isp:InkDriver"})
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("ink_isp", None)


def test_predict_on_a_plug_in_device_from_the_cli(board_run, ink_plugin, tmp_path):
    tmp, prof, held = board_run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ink_plugin), os.environ.get("PYTHONPATH", "")])}
    out, params_out = tmp_path / "ink.png", tmp_path / "ink.json"
    cmd = [sys.executable, "-m", "hil_tune.cli", "predict", str(tmp / "pred"), held[0], "--out", str(out),
           "--params-out", str(params_out), "--size", "32", "--driver", "ink", "-o", "sensor_size=32"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    params = json.loads(params_out.read_text())
    got = np.asarray(Image.open(out))
    builtin = SyntheticISP(prof).run_frame(_frame(prof, held[0], 32), params)
    assert np.array_equal(got, 255 - builtin)  # exactly the device's render, not the built-in ISP's
    assert not np.array_equal(got, builtin)


def test_eval_predictor_on_the_emulated_board_over_serial(board_run, tmp_path):
    tmp, prof, held = board_run
    fw = BoardFirmware(sensor_size=32, power_on=FAST)
    with SerialEmulator(fw, link=tmp_path / "board0"):
        drv = create_driver("serial", prof, device=str(tmp_path / "board0"), attempt_timeout=0.2)
        renderer = DeviceRenderer(drv, prof)
        try:
            report = evaluate_predictor(tmp / "pred", held[:1], tmp_path / "report", size=32, expert_budget=5,
                                        oracle_budget=3, renderer=renderer, refine_queries=(2, 4))  # fmt: skip
        finally:
            renderer.close()
    assert report["device"]["driver"] == "serial" and report["device"]["transport"]
    n = len(report["per_image"])
    q = report["queries"]
    n_train = len(report["expert"]["train_images"])
    assert q["default"] == q["predicted"] == n and q["expert"] == 5 * n_train and q["oracle"] == 3 * n
    assert q["predicted+2"] == 2 * n and q["predicted+4"] == 4 * n and q["ideal"] == 9 * n
    # every render went through the board: the queries, plus the expert's and oracle's outputs
    assert renderer.calls == report["isp_renders"] == sum(q.values()) + 2 * n
    s = report["summary"]
    assert set(s) == {"default", "expert", "predicted", "predicted+2", "predicted+4", "ideal", "oracle"}
    assert s["predicted+4"]["loss"] <= s["predicted+2"]["loss"] <= s["predicted"]["loss"]
    for row in report["per_image"]:  # the oracle starts from the best of the others and never loses it
        assert row["oracle"]["loss"] <= min(row[m]["loss"] for m in s if m != "oracle") + 1e-12
    md = (tmp_path / "report" / "report.md").read_text()
    assert "zeroth-order tuning on the device" in md and f"| expert | {5 * n_train} |" in md


def test_tune_from_the_cli_on_sim(board_run, tmp_path):
    tmp, prof, held = board_run
    out = tmp_path / "best.json"
    cmd = [sys.executable, "-m", "hil_tune.cli", "tune", str(tmp / "pred"), held[0], "--driver", "sim",
           "-o", "sensor_size=32", "--queries", "3", "--size", "32", "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout[res.stdout.index("{") :])
    assert result["queries"] == 4 and result["device"]["driver"] == "sim"
    assert result["best_score"]["loss"] <= result["predicted_score"]["loss"]
    _, warnings = prof.space.validate(json.loads(out.read_text()))
    assert warnings == []


def test_a_device_fault_names_the_image_and_setting(board_run, tmp_path):
    """A board that stops answering: bounded retries, then one error naming image and setting."""
    _, prof, held = board_run
    fw = BoardFirmware(sensor_size=32, power_on=FAST)
    with SerialEmulator(fw, link=tmp_path / "board1") as emu:
        drv = create_driver("serial", prof, device=str(tmp_path / "board1"), attempt_timeout=0.1, timeout=0.5)
        renderer = DeviceRenderer(drv, prof, retries=1, backoff_s=0.01)
        frame = dataclasses.replace(_frame(prof, held[0], 32), source=held[0])
        held_before = fw.params_of(fw.shadow)
        emu.faults.silent = True
        with pytest.raises(HilTuneError, match=rf"rendering {held[0]} failed after 2 attempt.*gain-r"):
            renderer.render([(frame, {**prof.space.defaults(), "gain-r": 2.0})], [held[0]])
        emu.faults.silent = False
        renderer.close()  # the board is back: what it held before is pushed back
        assert fw.params_of(fw.shadow) == held_before


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=20, max_size=20), st.integers(0, 3), st.booleans())
def test_refinement_never_pushes_outside_the_region(board_run, start, seed, through_proxy):
    """Whatever the start, every setting the local search pushes to a real (sim) device lies
    inside the region box, and the search never returns worse than its start; with or without
    the descent through the proxy first (which must stay in the box too)."""
    tmp, prof, held = board_run
    _, side, _ = load_predictor(tmp / "pred")
    stage = proxy_stage(side, prof, 5) if through_proxy else None
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    pushed = []

    class Recording(DeviceRenderer):
        def render(self, jobs, names=None):
            pushed.extend(p for _, p in jobs)
            return super().render(jobs, names)

    renderer = Recording(SimDriver(prof, sensor_size=32, power_on=FAST), prof)
    frame = _frame(prof, held[0], 32)
    ref = np.round(frame.reference * 255).astype(np.uint8)
    try:
        _, loss, used, _ = refine(renderer, prof, frame, ref, prof.space.decode(np.clip(start, 0, 1)),
                                     lower, upper, 4, seed, stage=stage)  # fmt: skip
    finally:
        renderer.close()
    assert used == 5 == len(pushed)
    for p in pushed:
        u = prof.space.encode(p)
        assert np.all(u >= lower - 1e-9) and np.all(u <= upper + 1e-9)
    start_loss = score(SyntheticISP(prof).run_frame(frame, pushed[0]), ref)["loss"]
    assert loss <= start_loss


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 64), st.integers(1, 64))
def test_predict_on_any_size_renders_or_is_refused_with_a_reason(board_run, tmp_path_factory, h, w):
    """Random input sizes from 1 to 64 pixels through `predict`: a render of the input's (even)
    size, or one InputError naming the size; never a crash."""
    tmp, _, _ = board_run
    path = tmp_path_factory.mktemp("psize") / "img.png"
    Image.fromarray(np.random.default_rng(h * 100 + w).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    out = path.with_name("out.png")
    try:
        render_prediction(tmp / "pred", str(path), out)
    except InputError as err:
        assert "smaller than" in str(err) or "too small" in str(err) or "must be even" in str(err), err
        assert not out.exists()
        return
    assert np.asarray(Image.open(out)).shape == (h // 2 * 2, w // 2 * 2, 3)


def test_the_proxy_stage_descends_and_is_rendered_once(board_run, tmp_path):
    """The descent lowers the task loss through the proxy (what it optimises), stays in the region,
    and costs one device query of the K; a proxy that is gone is a clear error unless the stage is
    turned off, and another proxy can be named."""
    import torch

    from hil_tune.raw import CFA_PATTERNS

    tmp, prof, held = board_run
    _, side, _ = load_predictor(tmp / "pred")
    lower, upper = np.asarray(side["region"]["lower"]), np.asarray(side["region"]["upper"])
    assert Path(side["proxy"]["run"]).is_absolute()  # a run moved to another working folder still finds it
    stage = proxy_stage(side, prof, 15)
    frame = _frame(prof, held[0], 32)
    ref = np.round(frame.reference * 255).astype(np.uint8)
    start = np.clip(prof.space.encode(prof.space.defaults()), lower, upper)
    found = descend(stage, frame, ref, start, lower, upper)
    assert np.all(found >= lower - 1e-6) and np.all(found <= upper + 1e-6) and not np.allclose(found, start)

    def proxy_loss(u):
        mosaic = torch.from_numpy(frame.normalized()[None, None].astype(np.float32))
        cfa = torch.tensor([CFA_PATTERNS.index(frame.cfa)])
        out = stage.proxy(mosaic, cfa, torch.tensor(u, dtype=torch.float32)[None])
        batch = {"reference": torch.from_numpy(ref.transpose(2, 0, 1)[None].astype(np.float32) / 255)}
        with torch.no_grad():
            return stage.task.loss(out, batch).item()

    assert proxy_loss(found) < proxy_loss(start)
    renderer = DeviceRenderer(SimDriver(prof, sensor_size=32, power_on=FAST), prof)
    try:
        _, _, used, _ = refine(renderer, prof, frame, ref, prof.space.decode(start), lower, upper, 1, 0,
                               start_loss=1e9, stage=stage)  # fmt: skip
        assert used == 1 == renderer.calls
    finally:
        renderer.close()
    gone = {**side, "proxy": {**side["proxy"], "run": str(tmp_path / "no-such-proxy")}}
    with pytest.raises(InputError, match=r"give --proxy RUN .* or --proxy-steps 0"):
        proxy_stage(gone, prof, 20)
    assert proxy_stage(gone, prof, 0) is None
    assert proxy_stage(gone, prof, 3, tmp / "proxy").run == tmp / "proxy"
    with pytest.raises(InputError, match="--proxy-steps -1"):
        proxy_stage(side, prof, -1)


def test_eval_proxy_on_the_emulated_board_over_serial_with_its_error_budget(board_run, tmp_path):
    """`eval proxy --driver serial`: every device render goes through the board; the grey-box's
    report splits its error into blocks alone vs with the residual, and by block (knob group)."""
    from hil_tune.train.proxy_eval import evaluate_proxy

    tmp, prof, _ = board_run
    fw = BoardFirmware(sensor_size=32, power_on=FAST)
    with SerialEmulator(fw, link=tmp_path / "board2"):
        report = evaluate_proxy(tmp / "proxy", tmp / "ds", tmp_path / "report", driver="serial",
                                driver_options={"device": str(tmp_path / "board2"), "attempt_timeout": 0.2},
                                sensitivity_points=2, rank_sets=3,
                                sensitivity_params=["gain-r", "ccm01", "usm-amount"])  # fmt: skip
    assert fw.frame_id >= 3 * 2  # the board rendered the sensitivity curves (and the ranking)
    budget = report["error_budget"]
    blocks_alone = budget["blocks_without_residual_psnr"]
    assert blocks_alone["n"] == report["fidelity"]["unseen_images"]["psnr"]["n"] > 0
    assert 10 < blocks_alone["mean"] < 60
    groups = {spec.group for spec in prof.space if spec.name in ("gain-r", "ccm01", "usm-amount")}
    assert set(budget["by_block"]) == groups
    worst = [b["worst_psnr"] for b in budget["by_block"].values()]
    assert worst == sorted(worst)  # worst block first
    for name, block in budget["by_block"].items():
        curves = [report["sensitivity"][k]["psnr"] for k in block["knobs"]]
        assert block["worst_psnr"] == min(min(c) for c in curves), name


def test_cma_es_renders_each_generation_in_one_call_and_scores_each_setting_over_every_frame():
    """The expert's and oracle's CMA-ES hand a whole generation to the renderer at once (population
    x frames jobs), so a worker pool renders side by side; the loss kept for the best setting is
    that setting's own mean over the frames (two different crops, so a mis-sliced batch shows)."""
    from hil_tune.isp.firmwares import isp_for
    from hil_tune.profiles import load_profile
    from hil_tune.train.predictor_eval import optimise

    prof = load_profile("synthetic")
    foreign = isp_for("foreign", prof)  # milliseconds a render: no BM3D
    batches: list[int] = []

    class InProcess:
        calls = 0

        def render(self, jobs, names=None):
            batches.append(len(jobs))
            self.calls += len(jobs)
            return [foreign.run_frame(f, p) for f, p in jobs]

    frames = []
    for source in ("bundled:coffee", "bundled:chelsea"):
        frame = _frame(prof, source, 32)
        frames.append((frame, np.round(frame.reference * 255).astype(np.uint8)))
    lower, upper = np.zeros(len(prof.space)), np.ones(len(prof.space))
    renderer = InProcess()
    best, loss = optimise(renderer, prof, frames, lower, upper, 20, prof.space.encode(prof.space.defaults()), 0)
    assert batches == [2, 16, 16, 6] and renderer.calls == 40  # x0, then 8 + 8 + 3 settings of 2 frames
    own = np.mean([score(foreign.run_frame(f, best), ref)["loss"] for f, ref in frames])
    assert loss == pytest.approx(own, abs=1e-12)
