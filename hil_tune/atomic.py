"""One way to write a file so that a crash, a full disk or `ulimit -f` never leaves a torn one:
temp file beside it, fsync, rename, fsync the folder. Datasets, checkpoints and the render cache
all write through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hil_tune.errors import HilTuneError


class WriteError(HilTuneError):
    """A file could not be written; the old file (if any) is untouched and no temp file is left."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, error: type[HilTuneError] = WriteError) -> None:
    """Replace `path` with `data` whole or not at all; raises `error` naming the file and cause."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise error(f"cannot write {path}: {err.strerror or err}; nothing was changed") from None
