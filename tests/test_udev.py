"""udev/70-hil-tune.rules: it parses, it is never world-writable, and it matches the profiles' boards."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hil_tune.profiles import bundled_names, load_profile

RULES = Path(__file__).parents[1] / "udev" / "70-hil-tune.rules"
PAIR = re.compile(r'\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
MATCH_KEYS = {"SUBSYSTEM", "KERNEL", "ACTION", "DRIVER", "ENV", "ATTR", "ATTRS", "SUBSYSTEMS"}
ASSIGN_KEYS = {"MODE", "GROUP", "OWNER", "TAG", "SYMLINK", "ENV", "IMPORT", "RUN"}


def parse_rules(text: str) -> list[list[tuple[str, str, str]]]:
    """Each rule line as (key, operator, value) triples; raises on anything udev would reject."""
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pos, triples = 0, []
        while pos < len(line):
            m = PAIR.match(line, pos)
            if not m:
                raise ValueError(f"line {n}: cannot parse at column {pos + 1}: {line[pos : pos + 30]!r}")
            key, op, value = m.groups()
            base = key.split("{")[0]
            if op in ("==", "!=") and base not in MATCH_KEYS:
                raise ValueError(f"line {n}: {key} cannot be matched")
            if op not in ("==", "!=") and base not in ASSIGN_KEYS:
                raise ValueError(f"line {n}: {key} cannot be assigned")
            triples.append((key, op, value))
            pos = m.end()
        rules.append(triples)
    return rules


def test_the_parser_rejects_what_udev_rejects():
    with pytest.raises(ValueError, match="cannot parse"):
        parse_rules('SUBSYSTEM=="usb" MODE="0660"')  # missing comma
    with pytest.raises(ValueError, match="cannot be assigned"):
        parse_rules('SUBSYSTEM=="usb", BOGUS="1"')


def test_rules_parse_and_grant_group_and_seat_access_only():
    rules = parse_rules(RULES.read_text())
    granting = [r for r in rules if any(k == "MODE" for k, _, _ in r)]
    assert len(granting) >= 4
    for rule in granting:
        fields = {k: v for k, op, v in rule if op in ("=", "+=")}
        mode = int(fields["MODE"], 8)
        assert mode & 0o007 == 0, f"world access in {rule}"
        assert fields["MODE"] == "0660" and fields["GROUP"] == "hil-tune" and fields["TAG"] == "uaccess"


def test_every_register_board_profile_has_a_rule_for_its_vid_pid():
    rules = parse_rules(RULES.read_text())
    ids = {
        (dict((k, v) for k, _, v in r).get("ATTR{idVendor}"), dict((k, v) for k, _, v in r).get("ATTR{idProduct}"))
        for r in rules
    }
    boards = [load_profile(n) for n in bundled_names()]
    boards = [p for p in boards if p.device is not None and p.device.vendor_id is not None]
    assert boards
    for prof in boards:
        assert (f"{prof.device.vendor_id:04x}", f"{prof.device.product_id:04x}") in ids, prof.name


def test_serial_ports_get_a_stable_link_and_no_modem_manager():
    serial = [r for r in parse_rules(RULES.read_text()) if ("SUBSYSTEM", "==", "tty") in r]
    assert serial
    for rule in serial:
        assert ("ENV{ID_MM_DEVICE_IGNORE}", "=", "1") in rule
        assert any(k == "SYMLINK" and v.startswith("hil-tune/") for k, _, v in rule)


@pytest.mark.skipif(shutil.which("udevadm") is None, reason="udevadm is not installed here; the parser above checks")
def test_udevadm_verify_accepts_the_rules():
    res = subprocess.run(["udevadm", "verify", str(RULES)], capture_output=True, text=True)
    if "Unknown command" in res.stderr or ("invalid" in res.stderr.lower() and "verb" in res.stderr.lower()):
        pytest.skip("this udevadm has no verify command")
    assert res.returncode == 0, res.stderr
