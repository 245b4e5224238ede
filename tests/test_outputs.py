"""Output paths are checked before any work, without side effects."""

from __future__ import annotations

import os

import pytest

from hil_tune.errors import InputError
from hil_tune.outputs import check_output


def test_paths_that_cannot_be_written_are_refused_and_nothing_is_made(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        check_output(tmp_path / "afile" / "deeper" / "o.png", "--out")
    with pytest.raises(InputError, match="is a folder, not a file"):
        check_output(tmp_path / "adir", "--out")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output(tmp_path / "afile", "--out", folder=True)
    check_output(tmp_path / "new" / "run", "--out", folder=True)  # creatable: fine, and not created
    assert not (tmp_path / "new").exists()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "adir") else real(p, mode))
    with pytest.raises(InputError, match="adir is not writable"):  # root passes any permission bits
        check_output(tmp_path / "adir" / "o.png", "--out")
