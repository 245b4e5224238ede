"""Child processes for the tests that launch torchrun: a port nobody holds, and a wait that takes
the whole process tree down on timeout.

Why: torchrun's agent starts the workers in their own processes. A fixed rendezvous port can be
held by another run on the same machine (a second test session, a leftover worker), and a worker
whose partner is gone waits for it forever; `subprocess.run`'s timeout kills only the agent and
leaves that worker orphaned, asleep, holding the port for the next run. A new session per launch
makes the agent and its workers one process group, killed together.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Launch `cmd` as the leader of its own process group, output captured as text."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """(exit status, stderr) once `proc` ends; on timeout its whole group is killed and the
    status is that of a killed process, so the test fails with the output it had."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        err = f"timed out after {timeout:.0f} s; process group killed\n{err}"
    return proc.returncode, err


def run(cmd: Sequence[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    return finish(start(cmd, env), timeout)
