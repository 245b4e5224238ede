"""The torchrun tests' process helper: a timeout takes the launched process's children with it."""

from __future__ import annotations

import os
import sys
import time

import procs

CHILD_THEN_SLEEP = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timeout_kills_the_whole_group_and_reports_it():
    proc = procs.start([sys.executable, "-c", CHILD_THEN_SLEEP], dict(os.environ))
    child = int(proc.stdout.readline())  # type: ignore[union-attr]
    code, err = procs.finish(proc, timeout=1)
    assert code != 0 and "timed out after 1 s" in err
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:  # reaped by init once killed
        time.sleep(0.05)
    assert not _alive(child)


def test_free_port_can_be_bound():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", procs.free_port()))
