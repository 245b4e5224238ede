"""The serial driver against the emulated board with faults injected on the device side of the pty."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rigs import BOARD_CHANGE, rig

from hil_tune.drivers import DeviceDisconnected, DeviceNotFound, DeviceTimeout, ParameterRejected, ProtocolError
from hil_tune.drivers.registers import register_map
from hil_tune.profiles import load_profile


@pytest.fixture
def board(tmp_path):
    with rig("serial", tmp_path) as r:
        r.driver.open()
        yield r


def test_a_lost_reply_is_retried_without_writing_twice(board):
    drv, emu, fw = board.driver, board.extra["emu"], board.extra["fw"]
    before = len(fw.written)
    emu.faults.drop_replies = 1
    drv.set_params({"gain-b": 1.25})
    assert len(fw.written) == before + 1  # executed once, answered twice
    assert drv.link.retransmits >= 1
    assert drv.get_params()["gain-b"] == 1.25


@pytest.mark.parametrize(
    "fault",
    [
        {"drop_requests": 1},
        {"corrupt_requests": 1},
        {"corrupt_replies": 1},
        {"truncate_replies": 1},
        {"garbage": b"\x13\x37\x00\xff\xfe"},
    ],
    ids=lambda f: next(iter(f)),
)
def test_transient_faults_are_recovered_and_applied_once(board, fault):
    drv, emu, fw = board.driver, board.extra["emu"], board.extra["fw"]
    before = len(fw.written)
    for key, value in fault.items():
        setattr(emu.faults, key, value)
    applied = drv.set_params({"gain-r": 2.5, "ccm10": -0.5})
    assert len(fw.written) == before + 2
    assert drv.get_params() == applied
    frame = drv.capture()
    assert board.made_with(frame, applied)


def test_a_silent_board_times_out_within_the_call_timeout(board):
    drv, emu = board.driver, board.extra["emu"]
    emu.faults.silent = True
    t = time.monotonic()
    with pytest.raises(DeviceTimeout, match="READ"):
        drv.get_params(timeout=0.5)
    assert time.monotonic() - t < 1.0
    emu.faults.silent = False
    assert drv.get_params()


def test_a_busy_board_is_waited_for(board):
    drv, fw = board.driver, board.extra["fw"]
    fw.busy_until = time.monotonic() + 0.02
    assert drv.set_params({"usm-amount": 1.5})["usm-amount"] == 1.5


def test_unplug_mid_push_leaves_all_or_nothing_and_reconnect_finds_the_board(board):
    drv, emu = board.driver, board.extra["emu"]
    before = drv.get_params()
    emu.faults.unplug_after = 1  # the write executes, then the cable comes out before the reply
    with pytest.raises(DeviceDisconnected):
        drv.set_params(BOARD_CHANGE)
    assert not emu.plugged
    with pytest.raises(DeviceNotFound):
        drv.reconnect()  # the symlink is gone while unplugged
    emu.replug()
    drv.reconnect()
    now = drv.get_params()
    changed = {k for k in BOARD_CHANGE if now[k] != before[k]}
    assert changed in (set(), set(BOARD_CHANGE)), "a push was half-applied"
    # The loop above this driver re-pushes after a reconnect; it then holds exactly the request.
    applied = drv.set_params(BOARD_CHANGE)
    assert board.made_with(drv.capture(), applied)


def test_open_fails_clearly(tmp_path):
    from hil_tune.drivers.registry import create_driver

    with pytest.raises(DeviceNotFound, match="cannot open"):
        create_driver("serial", "emulated-board", device=str(tmp_path / "nope")).open()
    with pytest.raises(DeviceNotFound, match="give the port"):
        create_driver("serial", "emulated-board").open()


def test_a_board_with_another_serial_number_is_refused(tmp_path):
    from hil_tune.drivers.registry import create_driver

    with rig("serial", tmp_path):
        other = create_driver("serial", "emulated-board", device=str(tmp_path / "board0"), serial_number="HT-9999")
        with pytest.raises(DeviceNotFound, match="HT-9999"):
            other.open()


def test_a_board_running_another_register_map_is_refused(tmp_path):
    from hil_tune.drivers.emulated.firmware import BoardFirmware

    with rig("serial", tmp_path) as r:
        r.extra["fw"].profile = r.extra["fw"].profile.model_copy(update={"name": "other-board"})
        with pytest.raises(ProtocolError, match="other-board"):
            r.driver.open()
    assert BoardFirmware  # imported for the type the rig patches


def test_an_edited_profile_that_kept_the_name_is_refused_at_open(tmp_path):
    """Identified by hash, not name: a copy of emulated-board with one register's scale changed
    (it would write every gain-r 10x too large) is refused; one that only adds a region opens."""
    from hil_tune.drivers.registry import create_driver

    edited = tmp_path / "edited.toml"
    edited.write_text('extends = "emulated-board"\nname = "emulated-board"\n')
    base = load_profile("emulated-board")
    maps = base.device.model_dump(mode="json")
    maps["map"]["gain-r"]["scale"] = maps["map"]["gain-r"]["scale"] * 10
    bad = base.model_copy(update={"device": type(base.device).model_validate(maps)})
    with rig("serial", tmp_path) as r:
        drv = create_driver("serial", bad, device=str(tmp_path / "board0"), attempt_timeout=0.2)
        with pytest.raises(ProtocolError, match="does not match the board's own"):
            drv.open()
        (tmp_path / "region.toml").write_text(
            'extends = "emulated-board"\nname = "emulated-board"\n[region.narrow]\ngain-r = [1.0, 1.5]\n'
        )
        ok = create_driver("serial", load_profile(tmp_path / "region.toml"), device=str(tmp_path / "board0"))
        with ok:
            assert ok.get_params() == r.extra["fw"].params_of(r.extra["fw"].settle.active)


@pytest.fixture(scope="module")
def shared_board(tmp_path_factory):
    with rig("serial", tmp_path_factory.mktemp("board")) as r:
        r.driver.open()
        yield r


_space = load_profile("emulated-board").space
_wild = st.one_of(
    st.floats(-20, 120),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 4.0000001, 5.005, 1e-9]),
    st.sampled_from(["gw", "x", "g4"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(_space.names), _wild, min_size=1, max_size=6))
def test_no_value_outside_the_profile_ever_reaches_a_register(shared_board, params):
    drv, fw = shared_board.driver, shared_board.extra["fw"]
    regs = register_map(drv.profile)
    try:
        applied = drv.set_params(params)
    except ParameterRejected:
        pass
    else:  # accepted values are on the device exactly as snapped
        assert all(applied[k] == drv.space[k].quantize(v)[0] for k, v in params.items())
    for addr, value in fw.written:
        reg = regs[addr]
        assert reg.lo <= value <= reg.hi and (value - reg.lo) % reg.step == 0, (reg.name, value)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_the_emulator_never_replaces_a_users_file_or_folder(tmp_path, kind):
    from hil_tune.drivers.emulated.firmware import BoardFirmware
    from hil_tune.drivers.emulated.serial_pty import SerialEmulator
    from hil_tune.errors import HilTuneError

    target = tmp_path / "board"
    if kind == "file":
        target.write_text("my notes")
    else:
        target.mkdir()
    with pytest.raises(HilTuneError, match=f"a {kind} is there"), SerialEmulator(BoardFirmware(), link=target):
        pass
    assert (target.read_text() == "my notes") if kind == "file" else target.is_dir()
    assert not (tmp_path / "board.new").exists()
