"""`hil-tune drivers|devices|device|emulate` through the console entry point, against a running emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_cli_isp import cli, one_error_line


@pytest.fixture
def emulator(tmp_path):
    link = tmp_path / "board"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil_tune.cli", "emulate", "serial", "--link", str(link), "--sensor-size", "32",
         "--seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = proc.stdout.readline().strip()  # the pty path, printed once the board is up
    assert first.startswith("/dev/"), proc.stderr.read() if proc.poll() is not None else first
    deadline = time.monotonic() + 10
    while not link.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield link
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "emulator stopped after" in stderr


def test_set_get_capture_against_the_emulated_board(emulator, tmp_path):
    dev = ["--driver", "serial", "--device", str(emulator)]
    res = cli("device", "set", *dev, "--set", "filter-strength=0", "--set", "gain-r=1.504")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["gain-r"] == 1.5 and "off the grid" in res.stderr
    got = json.loads(cli("device", "get", *dev).stdout)
    assert got["gain-r"] == 1.5 and got["filter-strength"] == 0.0
    info = json.loads(cli("device", "describe", *dev).stdout)
    assert info["serial_number"] == "HT-0001" and info["settle_frames"] == 2
    out = tmp_path / "frame.png"
    res = cli("device", "capture", *dev, "--out", str(out))
    assert res.returncode == 0, res.stderr
    image = np.asarray(Image.open(out))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert image.shape == (32, 32, 3) and meta["params"]["gain-r"] == 1.5 and meta["cfa"] == "RGGB"


def test_bad_input_is_one_clear_line(emulator):
    dev = ["--driver", "serial", "--device", str(emulator)]
    assert "gain-r: 9.0 is outside 0.01..5.0" in one_error_line(cli("device", "set", *dev, "--set", "gain-r=9"))
    assert "no driver named 'camx'" in one_error_line(cli("device", "get", "--driver", "camx"))
    line = one_error_line(cli("device", "get", "--driver", "serial", "--device", "/dev/nonexistent-tty"))
    assert "cannot open /dev/nonexistent-tty" in line
    line = one_error_line(cli("device", "get", "--driver", "serial", "-o", "speed=9"))
    assert "KEY one of" in line and "baudrate" in line


def test_drivers_and_devices_list_what_is_here():
    res = cli("drivers")
    assert res.returncode == 0 and all(n in res.stdout for n in ("sim", "serial", "usb", "genicam"))
    found = json.loads(cli("devices", "--driver", "sim", "--json").stdout)
    assert found["sim"][0]["serial_number"] == "sim-0"
