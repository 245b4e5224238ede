"""Bad training settings and foreign checkpoints: one line naming the input, exit 2, nothing written."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
import torch
from capture_helpers import fast_sweep

from hil_tune.train import checkpoint


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return fast_sweep(tmp_path_factory.mktemp("settings"))[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil_tune.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--epochs", "0", "--epochs 0"), ("--batch", "0", "--batch 0"), ("--lr", "nan", "--lr nan"),
     ("--optimizer", "bogus", "--optimizer 'bogus'"), ("--width", "0", "--width 0"),
     ("--denoise-cache-mib", "-1", "--denoise-cache-mib -1"), ("--probe-steps", "-1", "--probe-steps -1"),
     ("--lr-schedule", "bogus", "--lr-schedule 'bogus'")],
)  # fmt: skip
def test_train_proxy_refuses_a_bad_setting(sweep, tmp_path, option, value, says):
    res = _cli("train", "proxy", str(sweep), "--out", str(tmp_path / "run"), option, value)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and says in res.stderr
    assert not (tmp_path / "run").exists()  # no untrained model left behind


def test_a_foreign_checkpoint_is_refused_without_unsafe_advice(tmp_path):
    """A pickle that is not tensors: refused as not ours, and never the advice to load it unsafely."""
    torch.save({"model": datetime.date(2020, 1, 1)}, tmp_path / "model.pt")  # not a tensor: code to run
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match="not a hil-tune checkpoint") as info:
        checkpoint.load(tmp_path / "model.pt")
    assert "weights_only" not in str(info.value)
    (tmp_path / "model.pt").write_bytes(b"\x00garbage")
    with pytest.raises(checkpoint.CheckpointError, match="not a hil-tune checkpoint"):
        checkpoint.load(tmp_path / "model.pt")


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--timeout", "0"], "timeout 0.0: must be a finite number of seconds above 0"),
     (["--timeout", "-1"], "timeout -1.0: must be"), (["--timeout", "nan"], "timeout nan: must be"),
     (["-o", "firmware=nope"], "unknown firmware 'nope'; known: synthetic, foreign, handset, studio")],
)  # fmt: skip
def test_a_bad_driver_option_is_one_line(args, says):
    res = _cli("device", "set", "--driver", "sim", "--set", "gain-r=1.2", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr and says in res.stderr, res.stderr


def test_json_true_is_not_taken_as_a_number(tmp_path):
    (tmp_path / "p.json").write_text('{"gain-r": true}')
    render = ["isp", "run", "bundled:coffee", "--out", str(tmp_path / "o.png")]
    for args in (["device", "set", "--driver", "sim"], render):
        res = _cli(*args, "--params", str(tmp_path / "p.json"))
        assert res.returncode == 2 and "gain-r: True is a boolean, not a number" in res.stderr, res.stderr
    assert not (tmp_path / "o.png").exists()


def test_a_file_size_limit_during_training_is_one_line_and_leaves_no_temp_file(sweep, tmp_path):
    """`ulimit -f` (or a full disk) while a checkpoint is written: exit 2 naming the file, and
    no `.checkpoint.pt.PID.tmp` left behind. The U-Net: checkpoints are written by the same code
    for both models, and it has no structure probe (a minute here, five under CI's load)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "hil_tune.cli", "train", "proxy", str(sweep), "--out", str(run), "--epochs", "1",
         "--model", "unet", "--width", "8", "--depth", "2"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "cannot write" in res.stderr and "File too large" in res.stderr
    assert not [p.name for p in run.rglob("*.tmp")]


def test_an_empty_split_is_one_line_for_training_and_for_evaluation(sweep, tmp_path):
    """All samples held out leaves nothing to train on; nothing held out (a tiny sweep) leaves
    nothing to evaluate on: each is one error naming why; from the CLI, exit 2."""
    from hil_tune.capture.dataset import DatasetReader
    from hil_tune.models.proxy import ProxyConfig
    from hil_tune.train.proxy_train import TrainConfig, train_proxy

    profile = DatasetReader(sweep).plan.load_profile()
    with pytest.raises(checkpoint.TrainSettingError, match="no training samples left after the split"):
        train_proxy(sweep, tmp_path / "all-held", profile, ProxyConfig(width=8, depth=2),
                    TrainConfig(epochs=1, val_sources=0.0, val_params=1.0))  # fmt: skip
    from capture_helpers import fast_profile

    from hil_tune.capture.dataset import DatasetFolder
    from hil_tune.capture.loop import CaptureSettings, run_capture
    from hil_tune.capture.plan import build_plan
    from hil_tune.capture.sources import resolve_sources

    one = DatasetFolder(tmp_path / "one-photo")  # one photo: no photo can be held out
    one.create(build_plan(profile, resolve_sources(["bundled:coffee"]), samples_per_source=4, patch=32, region="fast"))
    run_capture(one.root, CaptureSettings("sim", {"sensor_size": 32}, profile=str(fast_profile(tmp_path))))
    run = tmp_path / "none-held"
    train_proxy(one.root, run, profile, ProxyConfig(width=8, depth=2),
                TrainConfig(epochs=1, val_params=0.0, probe_steps=4))  # fmt: skip
    res = _cli("eval", "proxy", str(run), str(one.root))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "nothing unseen to evaluate on" in res.stderr


def test_a_diverged_step_stops_training_before_it_touches_the_weights():
    from hil_tune.errors import HilTuneError
    from hil_tune.train.steps import DivergedError, descend

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.ones(2, 3)
    descend(opt, model(x).pow(2).mean(), 0)  # a sound step moves the weights
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(DivergedError, match="epoch 3: the loss became nan") as err:
        descend(opt, model(x).mean() * float("nan"), 3)
    assert isinstance(err.value, HilTuneError) and isinstance(err.value, FloatingPointError)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(torch.isfinite(v).all() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def test_a_crash_between_the_weights_and_their_sidecar_loses_neither(tmp_path):
    """Killed after the weights' rename and before the sidecar's: the weights carry their own
    sidecar, so a resume reads epoch 1's history with epoch 1's weights, and the JSON is mended.
    A person's edit of the JSON of the same save is still what is read."""
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"model": {"w": torch.zeros(2)}, "epoch": 0}, {"epoch": 0, "history": [0]})
    stale = path.with_suffix(".json").read_text()
    checkpoint.save(path, {"model": {"w": torch.ones(2)}, "epoch": 1}, {"epoch": 1, "history": [0, 1]})
    path.with_suffix(".json").write_text(stale)  # as if the second sidecar's rename never happened
    state, side = checkpoint.load(path)
    assert state["epoch"] == 1 and side["history"] == [0, 1] and torch.equal(state["model"]["w"], torch.ones(2))
    assert checkpoint.SIDECAR_KEY not in state
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 1  # mended for people and tools
    path.with_suffix(".json").unlink()  # killed after the first epoch's weights: no sidecar yet
    assert checkpoint.load(path)[1]["epoch"] == 1
    edited = json.loads(path.with_suffix(".json").read_text())
    edited["note"] = "mine"
    path.with_suffix(".json").write_text(json.dumps(edited))
    assert checkpoint.load(path)[1]["note"] == "mine"
