"""The live loop on sim, on the serial emulator (settle frames, scene change, faults, SIGTERM)
and on GenICam viky.cti (nodes pushed while streaming)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from capture_helpers import BOARD_FAST, fast_profile

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.drivers.emulated.firmware import BoardFirmware
from hil_tune.drivers.emulated.serial_pty import SerialEmulator
from hil_tune.drivers.genicam_driver import bundled_producer
from hil_tune.drivers.registry import create_driver
from hil_tune.live import LiveLoop, LiveSettings
from hil_tune.models.predictor import AttentionPredictor, PredictorConfig
from hil_tune.models.proxy import ProxyConfig
from hil_tune.profiles import Profile, load_profile
from hil_tune.train.predictor_train import PredictorTrainConfig, load_predictor, train_predictor
from hil_tune.train.proxy_train import TrainConfig, train_proxy


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """A predictor trained (briefly) for the emulated board's space, inside the fast region."""
    tmp = tmp_path_factory.mktemp("live")
    prof = load_profile(fast_profile(tmp, BOARD_FAST))
    sources = ["bundled:coffee", "bundled:chelsea", "bundled:rocket", "bundled:astronaut"]
    plan = build_plan(prof, resolve_sources(sources), samples_per_source=4, patch=32, region="fast")
    DatasetFolder(tmp / "ds").create(plan)
    run_capture(tmp / "ds", CaptureSettings("sim", {"sensor_size": 32}, profile=str(tmp / "fast.toml")))
    train_proxy(tmp / "ds", tmp / "proxy", prof, ProxyConfig(width=8, depth=2), TrainConfig(epochs=1))
    train_predictor(tmp / "ds", tmp / "proxy", "reference", tmp / "pred", PredictorConfig(dim=32),
                    PredictorTrainConfig(epochs=2))  # fmt: skip
    model, _, profile = load_predictor(tmp / "pred")
    return tmp, model, profile


@pytest.fixture(scope="module")
def scene_predictor(predictor):
    """The same brief training without the global statistics. The scene-change test checks the
    loop's push-and-settle mechanics and needs a predictor whose output follows the scene: with the
    statistics, this 2-epoch predictor (32 px sim patches, all noisy) meets the board emulator's
    noiseless frames far outside what it trained on (the noise statistic reads -22 standard
    deviations), and its output moved by about 0.013 of the region at the scene change (0.06
    without), under the push threshold. A real sensor is never noiseless; the emulator is. Through
    the structure-5 proxy (learnt demosaic) this predictor's output moves under the default
    threshold (0.02) at the scene change, so the scene-change test pushes at 0.005: it checks the
    loop's mechanics, not how far a two-epoch predictor follows a scene."""
    tmp, _, _ = predictor
    train_predictor(tmp / "ds", tmp / "proxy", "reference", tmp / "pred-plain", PredictorConfig(dim=32, stats=False),
                    PredictorTrainConfig(epochs=2))  # fmt: skip
    model, _, profile = load_predictor(tmp / "pred-plain")
    return tmp, model, profile


def test_preview_packed_fast_paths_give_the_reference_numbers():
    """The latency path levels by table and packs planar; the numbers are the straightforward ones."""
    from hil_tune.drivers.base import Frame
    from hil_tune.live import preview_packed
    from hil_tune.raw import RawFrame, mosaic_rgb, pack4

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4096, (96, 96)).astype(np.uint16)
    levels = ((64.0, 60.0, 66.0, 70.0), 4000.0)
    frame = Frame(image=np.zeros((96, 96, 3), np.uint8), params={}, param_seq=0, frame_id=0, host_time_ns=0,
                  raw=codes, cfa="GBRG", raw_levels=levels)  # fmt: skip
    ref = pack4(RawFrame(mosaic=codes.astype(np.float64), cfa="GBRG", black_level=levels[0],
                         white_level=levels[1]).normalized(), "GBRG")  # fmt: skip
    np.testing.assert_allclose(preview_packed(frame, 96)[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    half = preview_packed(frame, 48)[0].permute(1, 2, 0).numpy()  # an exact 2x2 box average
    np.testing.assert_allclose(half, ref.reshape(24, 2, 24, 2, 4).mean(axis=(1, 3)), atol=1e-6)
    image = rng.integers(0, 256, (50, 64, 3)).astype(np.uint8)
    rgb_frame = Frame(image=image, params={}, param_seq=0, frame_id=0, host_time_ns=0)
    linear = (image.astype(np.float64) / 255) ** 2.2
    ref = pack4(mosaic_rgb(linear, "RGGB"), "RGGB")  # (25, 32, 4) -> 16 x 16: fractional pixel areas
    area = np.zeros((16, 16, 4))
    for i in range(16):  # the area-weighted mean, written out
        for j in range(16):
            y0, y1, x0, x1 = i * 25 / 16, (i + 1) * 25 / 16, j * 2, (j + 1) * 2
            for y in range(int(y0), int(np.ceil(y1))):
                wy = min(y + 1, y1) - max(y, y0)
                area[i, j] += wy * ref[y, x0:x1].sum(0)
            area[i, j] /= (y1 - y0) * (x1 - x0)
    got = preview_packed(rgb_frame, 32)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, area, atol=1e-5)


def test_preview_packed_shrinks_to_the_side_asked_and_linearises_16_bit_rgb():
    from hil_tune.drivers.base import Frame
    from hil_tune.live import preview_packed
    from hil_tune.raw import mosaic_rgb, pack4

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4096, (96, 96)).astype(np.uint16)
    frame = Frame(image=np.zeros((96, 96, 3), np.uint8), params={}, param_seq=0, frame_id=0, host_time_ns=0,
                  raw=codes, cfa="RGGB", raw_levels=((0.0,) * 4, 4095.0))  # fmt: skip
    full = preview_packed(frame, 96)[0].numpy()  # (4, 48, 48)
    small = preview_packed(frame, 96, 24)[0].numpy()  # the predictor's input size: one area pass
    np.testing.assert_allclose(small, full.reshape(4, 24, 2, 24, 2).mean(axis=(2, 4)), atol=1e-6)
    assert preview_packed(frame, 96, 64).shape == (1, 4, 48, 48)  # never larger than the preview
    image = rng.integers(0, 65536, (40, 40, 3)).astype(np.uint16)
    rgb16 = Frame(image=image, params={}, param_seq=0, frame_id=0, host_time_ns=0)
    ref = pack4(mosaic_rgb((image.astype(np.float64) / 65535) ** 2.2, "RGGB"), "RGGB")
    np.testing.assert_allclose(preview_packed(rgb16, 40)[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_the_live_predictor_is_traced_and_gives_the_eager_numbers(predictor):
    from hil_tune.models.predictor import for_latency, input_side

    _, model, _ = predictor
    side = input_side(model, 256)
    assert side == model.config.input_size
    fast = for_latency(model, torch.zeros(1, 4, side, side))
    assert isinstance(fast, torch.jit.ScriptModule)  # the fast path really is taken
    x = torch.rand(1, 4, side, side, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-4)
    flaky = Flaky(model)  # a wrapper with Python state: tracing would freeze its branches
    assert for_latency(flaky, torch.zeros(1, 4, side, side)) is flaky
    assert input_side(flaky, 256) == 128


def rows_of(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_predictor_for_other_parameters_is_refused_by_the_loop_before_any_push(predictor):
    """The check lives in the library: a Python caller of LiveLoop gets it as the CLI does. Same
    parameters under another profile name pass; one knob on another grid does not."""
    from hil_tune.errors import InputError

    _, model, profile = predictor
    renamed = profile.model_copy(update={"name": "same-knobs"})
    drv = create_driver("sim", renamed, sensor_size=32)
    LiveLoop(drv, model, profile, LiveSettings(frames=1))  # accepted
    data = profile.model_dump(mode="json")
    data["name"] = "coarser"
    data["params"][0]["step"] = 0.5  # one knob on another grid: the predictor's positions would lie
    with create_driver("sim", Profile.model_validate(data), sensor_size=32) as other:
        before = other.get_params()
        with pytest.raises(InputError, match=r"trained for profile .* whose parameters differ"):
            LiveLoop(other, model, profile, LiveSettings(frames=1))
        assert other.get_params() == before


def test_sim_pushes_deltas_on_the_grid_and_holds_still_on_a_static_scene(predictor, tmp_path):
    _, model, profile = predictor
    drv = create_driver("sim", profile, sensor_size=64, power_on={"filter-strength": 0.0})
    loop = LiveLoop(drv, model, profile, LiveSettings(frames=40), log=tmp_path / "live.jsonl")
    summary = loop.run()
    rows = rows_of(tmp_path / "live.jsonl")
    assert summary.frames == 40 == len(rows)
    assert 1 <= summary.pushes <= 3, "a static scene must settle, not flicker"
    assert all("pushed" not in r for r in rows[-25:])
    for r in rows:
        _, warnings = profile.space.validate(r["params"])
        assert warnings == []  # every applied value on the grid and in range
        for name, v in r.get("pushed", {}).items():
            assert profile.space[name].quantize(v) == (v, False)
    assert summary.latency_ms["predict"]["n"] == 40


class Flaky(torch.nn.Module):
    """The trained predictor, but every third call returns NaN."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        u = self.inner(x)
        return u * float("nan") if self.calls % 3 == 0 else u


def test_nan_predictions_keep_the_last_good_parameters(predictor, tmp_path):
    _, model, profile = predictor
    drv = create_driver("sim", profile, sensor_size=32, power_on={"filter-strength": 0.0})
    summary = LiveLoop(drv, Flaky(model), profile, LiveSettings(frames=15), log=tmp_path / "l.jsonl").run()
    rows = rows_of(tmp_path / "l.jsonl")
    assert summary.bad_predictions == 5 and sum(r.get("kept_last_good", False) for r in rows) == 5
    assert all(np.isfinite(v) for r in rows for v in r["params"].values() if not isinstance(v, str))


@pytest.fixture
def board(tmp_path):
    fw = BoardFirmware(sensor_size=64, power_on={"filter-strength": 0.0}, sensor="astronaut")
    with SerialEmulator(fw, link=tmp_path / "board") as emu:
        yield fw, emu, tmp_path / "board"


def registers(fw):
    return fw.params_of(fw.shadow)


def test_serial_scene_change_takes_effect_within_the_settle_count_then_stays_put(scene_predictor, board, tmp_path):
    _, model, profile = scene_predictor
    fw, _, link = board
    before = registers(fw)
    drv = create_driver("serial", load_profile("emulated-board"), device=str(link))
    settings = LiveSettings(frames=70, max_push_hz=1000, threshold=0.005)  # see scene_predictor
    loop = LiveLoop(drv, model, profile, settings, log=tmp_path / "s.jsonl")

    def change_scene():
        while loop.summary.frames < 35:
            time.sleep(0.005)
        fw.set_scene("rocket")

    threading.Thread(target=change_scene, daemon=True).start()
    summary = loop.run()
    rows = rows_of(tmp_path / "s.jsonl")
    assert summary.frames == 70 and summary.pushes >= 1
    pushes = [i for i, r in enumerate(rows) if "pushed" in r]
    assert any(i >= 35 for i in pushes), f"the new scene should have moved the parameters (pushes at {pushes})"
    last_push = pushes[-1]
    assert last_push < 60, "after the scene change the parameters must settle, not keep moving"
    # The frames after the last push report the new values within the board's settle count (2)...
    wanted = dict(rows[0]["params"])
    for r in rows:
        wanted.update(r.get("pushed", {}))
    applied_from = next(i for i in range(last_push + 1, len(rows)) if rows[i]["params"] == wanted)
    assert applied_from - last_push <= 2 + 2  # settle frames + the push's own frame and one in flight
    # ...and then stay put.
    assert all(r["params"] == wanted and r["settled"] for r in rows[applied_from + 1 :])
    assert registers(fw) == before, "the device gets its own parameters back at the end"
    assert summary.bytes_per_push is not None and summary.bytes_per_push <= 200


def test_serial_fault_mid_session_reconnects_and_logs_the_gap(predictor, board, tmp_path):
    _, model, profile = predictor
    _, emu, link = board
    drv = create_driver("serial", load_profile("emulated-board"), device=str(link), attempt_timeout=0.1)
    loop = LiveLoop(drv, model, profile, LiveSettings(frames=30, backoff_s=0.05), log=tmp_path / "f.jsonl")

    def pull_the_cable():
        while loop.summary.frames < 10:
            time.sleep(0.005)
        emu.unplug()
        time.sleep(0.4)
        emu.replug()

    threading.Thread(target=pull_the_cable, daemon=True).start()
    summary = loop.run()
    assert summary.frames == 30 and summary.faults >= 1 and summary.reconnects >= 1
    assert summary.gap_seconds >= 0.3
    faults = [r for r in rows_of(tmp_path / "f.jsonl") if "fault" in r]
    assert faults and faults[0]["gap_s"] >= 0.3


def test_sigterm_restores_the_device_and_exits_cleanly(predictor, board, tmp_path):
    tmp, _, _ = predictor
    fw, _, link = board
    before = registers(fw)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil_tune.cli", "live", "--driver", "serial", "--device", str(link),
         "--predictor", str(tmp / "pred"), "--seconds", "60", "--log", str(tmp_path / "t.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "t.jsonl").exists() and len((tmp_path / "t.jsonl").read_text().splitlines()) > 10:
            break
        time.sleep(0.05)
    assert registers(fw) != before, "the session should have pushed something"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "frames in" in stdout
    assert registers(fw) == before


@pytest.mark.skipif(bundled_producer() is None, reason="the genicam wheel with viky.cti is not installed")
def test_genicam_viky_nodes_pushed_while_streaming(tmp_path):
    profile = load_profile("viky")
    torch.manual_seed(3)
    # frame rate and ball size boxed away from the camera's own 20 Hz and 20 px, so there is something to push
    model = AttentionPredictor(3, [0.5, 0.6, 0.3], [0.8, 0.9, 0.7], PredictorConfig(dim=16, heads=2, self_layers=1))
    drv = create_driver("genicam", profile, cti=str(bundled_producer()))
    summary = LiveLoop(drv, model.eval(), profile, LiveSettings(frames=25, preview=64), log=tmp_path / "v.jsonl").run()
    rows = rows_of(tmp_path / "v.jsonl")
    assert summary.frames == 25 and summary.pushes >= 1 and summary.push_errors == 0
    pushed = {**next(r for r in rows if "pushed" in r)["pushed"]}
    assert any(r["params"] == {**r["params"], **pushed} for r in rows[-5:]), "frames made with the pushed values"
    # Width restarts the stream: held at its value, so capture never stalls on a restart.
    assert summary.held == ["width"]
    assert not any("width" in r.get("pushed", {}) for r in rows)
    assert {r["params"]["width"] for r in rows} == {profile.space["width"].default}


@pytest.mark.skipif(bundled_producer() is None, reason="the genicam wheel with viky.cti is not installed")
def test_genicam_viky_width_pushed_with_a_stream_restart_when_allowed(tmp_path):
    """--allow-restarts: a stream-locked node is written with the stream stopped and restarted, and
    frames after the settle count come out at the new width."""
    profile = load_profile("viky")
    torch.manual_seed(3)
    model = AttentionPredictor(3, [0.0, 0.2, 0.3], [0.3, 0.6, 0.7], PredictorConfig(dim=16, heads=2, self_layers=1))
    drv = create_driver("genicam", profile, cti=str(bundled_producer()))
    settings = LiveSettings(frames=25, preview=64, allow_restarts=True)
    widths: list[tuple[float, int]] = []
    loop = LiveLoop(drv, model.eval(), profile, settings, log=tmp_path / "v.jsonl",
                    on_frame=lambda f, row: widths.append((f.params["width"], f.image.shape[1])))  # fmt: skip
    summary = loop.run()
    rows = rows_of(tmp_path / "v.jsonl")
    assert summary.held == [] and summary.push_errors == 0
    new_width = next(r["pushed"]["width"] for r in rows if "width" in r.get("pushed", {}))
    assert new_width != profile.space["width"].default
    assert (new_width, int(new_width)) in widths[-5:], "frames at the pushed width, tagged with it"
    assert all(tagged == shape for tagged, shape in widths), "every frame tagged with the width it has"


def test_a_push_that_raises_is_reported_and_the_pusher_stays_usable():
    """A bug or an unexpected error on the push thread must not leave the pusher busy forever."""
    from hil_tune.live import Pusher

    class Flaky:
        calls = 0

        def set_params(self, delta, verify=True):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("firmware said something odd")

    pusher = Pusher(Flaky(), threading.Lock())  # type: ignore[arg-type]
    assert pusher.offer({"gain-r": 1.5})
    pusher.wait()
    (first,) = pusher.drain()
    assert first.error == "RuntimeError: firmware said something odd" and not pusher.busy
    assert pusher.offer({"gain-r": 1.6})
    pusher.wait()
    (second,) = pusher.drain()
    assert second.error is None and Flaky.calls == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--alpha", "5"], "--alpha 5"), (["--alpha", "nan"], "--alpha nan"), (["--frames", "-3"], "--frames -3"),
     (["--seconds", "-1"], "--seconds -1"), (["--threshold", "-0.1"], "--threshold -0.1"),
     (["--max-push-hz", "0"], "--max-push-hz 0"), (["--preview", "x.txt"], "--preview x.txt"),
     (["--log", "."], "--log .")],
)  # fmt: skip
def test_live_refuses_bad_settings_before_the_session(tmp_path, args, says):
    cmd = [sys.executable, "-m", "hil_tune.cli", "live", "--driver", "sim", "--predictor", str(tmp_path / "none")]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and says in res.stderr, res.stderr


def test_a_push_returns_a_status_whose_wait_raises_on_timeout_and_a_concurrent_push_is_refused():
    """ophyd's Status pattern: the handle says when the device holds the push; waiting too short
    raises instead of returning as if it were done; a second push while one is in flight is
    refused by name, not queued and not dropped silently."""
    from hil_tune.live import Pusher, PusherBusyError, PushTimeoutError

    release = threading.Event()

    class Slow:
        def set_params(self, delta, verify=True):
            release.wait(10)

    pusher = Pusher(Slow(), threading.Lock())  # type: ignore[arg-type]
    status = pusher.push({"gain-r": 1.5})
    assert not status.done
    with pytest.raises(PushTimeoutError, match=r"still in flight after 0\.05 s"):
        status.wait(0.05)
    with pytest.raises(PusherBusyError, match="in flight"):
        pusher.push({"gain-r": 1.6})
    assert pusher.offer({"gain-r": 1.6}) is False  # the frame loop's form: skipped
    release.set()
    result = status.wait(5)
    assert status.done and result.delta == {"gain-r": 1.5} and result.error is None
    assert pusher.push({"gain-r": 1.7}).wait(5).delta == {"gain-r": 1.7}  # usable again
    pusher.close()
    with pytest.raises(PusherBusyError, match="closed"):
        pusher.push({"gain-r": 1.8})
