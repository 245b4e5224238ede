"""Where a command will write, checked before it does any work.

Why: a render, a sweep or an epoch of training should not run for minutes and then die with an
OSError traceback because `--out` names a path under a file or in a folder nobody may write to.
The check has no side effects (no folder is made for a command that will then refuse a setting).
"""

from __future__ import annotations

import os
from pathlib import Path

from hil_tune.errors import InputError


def check_output(path: Path, what: str, *, folder: bool = False) -> None:
    """InputError unless `path` (a file, or with `folder` a folder) can be created or replaced."""
    p = Path(os.path.abspath(path))
    if p.exists():
        if folder and not p.is_dir():
            raise InputError(f"{what} {path}: is a file, not a folder")
        if not folder and p.is_dir():
            raise InputError(f"{what} {path}: is a folder, not a file")
    ancestor = p if folder else p.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: {ancestor} is not writable")
