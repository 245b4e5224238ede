"""The capture's folder policy as a library call: new plan, resume, and the refusals that keep an
earlier sweep from being overwritten."""

from __future__ import annotations

import pytest
from capture_helpers import fast_profile

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.prepare import PlanRequest, prepare_capture
from hil_tune.errors import InputError
from hil_tune.profiles import load_profile


def _no_profile():
    raise AssertionError("the profile was loaded where the folder's plan should have been enough")


@pytest.fixture
def profile(tmp_path):
    return load_profile(str(fast_profile(tmp_path)))


def test_a_new_folder_gets_the_requested_plan_and_a_resume_continues_it(tmp_path, profile):
    out = tmp_path / "ds"
    request = PlanRequest(["bundled:coffee"], samples_per_source=3, patch=32, region="fast")
    first = prepare_capture(out, request, resume=False, profile=lambda: profile)
    assert not first.resumed and len(first.plan.rows) == 3
    assert DatasetFolder(out).plan().key() == first.plan.key()
    # resuming needs only the folder: no sources, no profile
    again = prepare_capture(out, PlanRequest(), resume=True, profile=_no_profile)
    assert again.resumed and again.plan.key() == first.plan.key()
    # the same options again are the same plan (checked against the folder's own profile)
    same = prepare_capture(out, request, resume=True, profile=_no_profile)
    assert same.resumed and same.plan.key() == first.plan.key()


def test_a_dataset_is_never_replanned_or_overwritten(tmp_path, profile):
    out = tmp_path / "ds"
    request = PlanRequest(["bundled:coffee"], samples_per_source=3, patch=32, region="fast")
    prepare_capture(out, request, resume=False, profile=lambda: profile)
    before = (out / "plan.json").read_bytes()
    with pytest.raises(InputError, match="already holds a dataset: add --resume"):
        prepare_capture(out, request, resume=False, profile=lambda: profile)
    other = PlanRequest(["bundled:coffee"], samples_per_source=5, patch=32, region="fast")
    with pytest.raises(InputError, match="differ from the dataset's plan") as info:
        prepare_capture(out, other, resume=True, profile=lambda: profile)
    assert "samples_per_source" in str(info.value) and "(3, 5)" in str(info.value)
    assert (out / "plan.json").read_bytes() == before


def test_a_folder_holding_something_else_or_no_source_is_refused(tmp_path, profile):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    request = PlanRequest(["bundled:coffee"], samples_per_source=3, patch=32, region="fast")
    with pytest.raises(InputError, match="exists and is not empty"):
        prepare_capture(busy, request, resume=False, profile=lambda: profile)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(InputError, match="give at least one --source"):
        prepare_capture(tmp_path / "new", PlanRequest(), resume=False, profile=lambda: profile)
    assert not (tmp_path / "new").exists()
