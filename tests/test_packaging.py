"""A plain (non-editable) wheel ships hil_tune.drivers and the bundled profiles."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_wheel_contains_drivers_and_profiles_and_works_installed(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("hil_tune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hil_tune/drivers/__init__.py" in names
    assert "hil_tune/bundled_profiles/synthetic.toml" in names
    # every subpackage of the source tree ships (a wheel once lacked capture, models and train)
    source_packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "hil_tune").rglob("__init__.py")}
    shipped = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert source_packages <= shipped, source_packages - shipped
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import hil_tune, hil_tune.drivers, hil_tune.cli, hil_tune.capture.loop, hil_tune.train.proxy_train,"
        " hil_tune.train.predictor_eval, hil_tune.models.proxy, hil_tune.testing.contract;"
        " from hil_tune.profiles import load_profile;"
        "p = load_profile('synthetic'); print(hil_tune.__file__); print(len(p.params))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    first, count = res.stdout.split()
    assert first.startswith(str(target)) and count == "20"
