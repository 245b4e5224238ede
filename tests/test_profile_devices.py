"""Device maps in profiles: `extends`, register maps carrying every grid value, GenICam node maps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tune.errors import ProfileError
from hil_tune.profiles import load_profile


def test_emulated_board_extends_synthetic_and_maps_every_parameter():
    board, synthetic = load_profile("emulated-board"), load_profile("synthetic")
    assert board.params == synthetic.params and board.pipeline == synthetic.pipeline
    assert board.region == synthetic.region
    assert board.device is not None and board.device.control == "registers"
    assert set(board.device.map) == set(board.space.names)
    assert len({m.addr for m in board.device.map.values()}) == 20


def test_viky_maps_its_nodes():
    viky = load_profile("viky")
    assert viky.device is not None and viky.device.control == "genicam"
    assert {m.node for m in viky.device.map.values()} == {"AcquisitionFrameRate", "BouncingBallSize", "Width"}


BASE = """
extends = "synthetic"
name = "board-x"
[device]
control = "registers"
vendor_id = 0x1209
product_id = 0x0001
"""


def _board(tmp_path: Path, maps: dict[str, str]) -> Path:
    full = {n: f"{{ addr = {0x10 + 4 * i}, scale = 100 }}" for i, n in enumerate(load_profile("synthetic").space.names)}
    full["noise-type"] = "{ addr = 0x200 }"
    full.update(maps)
    lines = [f"map.{k} = {v}" for k, v in full.items() if v]
    path = tmp_path / "board.toml"
    path.write_text(BASE + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("maps", "expected"),
    [
        ({"gain-r": ""}, "device.map.gain-r: missing"),
        ({"gain-r": "{ addr = 0x10 }"}, "register 0x0010 already holds filter-strength"),
        ({"gain-r": "{ addr = 0x300, scale = 10 }"}, "step 0.01 x scale 10.0 is not an integer"),
        ({"mu2": "{ addr = 0x300, scale = 1e9 }"}, "overflows a 32-bit register"),
        ({"gain-q": "{ addr = 0x300 }"}, "device.map.gain-q: no such parameter"),
        ({"gain-r": "{ node = 'Gain' }"}, "a register device needs addr"),
    ],
)
def test_register_maps_that_cannot_carry_the_space_are_refused(tmp_path, maps, expected):
    with pytest.raises(ProfileError) as err:
        load_profile(_board(tmp_path, maps))
    assert expected in str(err.value) and "board.toml" in str(err.value)


def test_a_complete_map_loads_and_extends_resolves_relative_files(tmp_path):
    assert load_profile(_board(tmp_path, {})).name == "board-x"
    child = tmp_path / "child.toml"
    child.write_text('extends = "board.toml"\nname = "child"\n')
    assert load_profile(child).device.vendor_id == 0x1209


def test_extends_names_a_missing_base_clearly(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "nope"\nname = "p"\n')
    with pytest.raises(ProfileError, match="nope: no such file or bundled profile"):
        load_profile(path)
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\nname = "loop"\n')
    with pytest.raises(ProfileError, match=r"a cycle: .*loop\.toml -> .*loop\.toml"):
        load_profile(loop)
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "./a.toml"\nname = "b"\n')
    with pytest.raises(ProfileError, match=r"a cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_profile(tmp_path / "a.toml")


def test_nested_relative_extends_mean_the_same_from_any_directory(tmp_path, monkeypatch):
    """top/child.toml extends base/mid.toml, which extends its own neighbour board.toml: each
    file's `extends` is read against its own folder, wherever the command runs."""
    (tmp_path / "base").mkdir()
    (tmp_path / "top").mkdir()
    _board(tmp_path / "base", {})
    (tmp_path / "base" / "mid.toml").write_text('extends = "board.toml"\nname = "mid"\n')
    (tmp_path / "top" / "child.toml").write_text('extends = "../base/mid.toml"\nname = "child"\n')
    # a decoy board.toml in the working directory must not be picked up instead
    (tmp_path / "top" / "board.toml").write_text('extends = "synthetic"\nname = "decoy"\n')
    for cwd in (tmp_path, tmp_path / "top", tmp_path / "base"):
        monkeypatch.chdir(cwd)
        prof = load_profile(tmp_path / "top" / "child.toml")
        assert prof.name == "child" and prof.device.vendor_id == 0x1209
