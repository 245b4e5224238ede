"""Random corruption of a small dataset: one flipped byte anywhere in a shard (tar headers, member
data, padding). Whatever it hits, a training reader either reads every sample exactly as written
or refuses with a DatasetError naming what is wrong; `verify` reports it; and a resumed capture
either refuses with one line or repairs the dataset to one that verifies and reads back the same.
Never a traceback, never a corrupt sample used silently."""

from __future__ import annotations

import contextlib
import shutil
import tarfile

import numpy as np
import pytest
from capture_helpers import fast_profile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil_tune.capture.dataset import DatasetError, DatasetFolder, DatasetReader
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.profiles import load_profile
from hil_tune.train.data import SweepDataset


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corrupt")
    prof = load_profile(fast_profile(tmp))
    plan = build_plan(prof, resolve_sources(["bundled:coffee", "bundled:rocket"]), samples_per_source=3,
                      patch=32, region="fast", shard_size=3)  # fmt: skip
    folder = DatasetFolder(tmp / "ds")
    folder.create(plan)
    settings_ = CaptureSettings("sim", {"sensor_size": 32}, profile=str(tmp / "fast.toml"))
    run_capture(folder.root, settings_)
    reader = DatasetReader(folder.root)
    originals = {i: reader.sample(i, check=True) for i in reader.indices}
    return folder.root, settings_, originals


def _same(sample, original) -> bool:
    return (
        sample.meta == original.meta
        and np.array_equal(sample.raw, original.raw)
        and np.array_equal(sample.output, original.output)
        and np.array_equal(sample.reference, original.reference)
    )


def _read_all(root):
    ds = SweepDataset(root)
    assert len(ds) == 6, "a training reader silently lost samples"
    return {i: ds.reader.sample(i) for i in ds.indices}


def _check_flip(small, copy, shard: int, offset_of, flip: int) -> str:
    """Flip one byte of a copy of the dataset and check every guarantee; returns the outcome."""
    root, capture_settings, originals = small
    shutil.copytree(root, copy)
    path = copy / "shards" / f"{shard:05d}.tar"
    data = bytearray(path.read_bytes())
    data[offset_of(path, len(data))] ^= flip
    path.write_bytes(bytes(data))
    try:
        got = _read_all(copy)
    except DatasetError as err:
        got = None
        assert str(err) and "\n" not in str(err)
    if got is not None:
        assert all(_same(got[i], originals[i]) for i in originals), "a changed sample was read as sound"
        return "read unchanged"  # the flip hit bytes no sample depends on (tar padding, an unused field)
    problems = None
    with contextlib.suppress(DatasetError):  # the shard is not even a tar: refused outright
        problems = DatasetReader(copy).verify()
    assert problems is None or problems, "verify passed a dataset a training reader refused"
    try:
        run_capture(copy, CaptureSettings(**capture_settings.__dict__))
    except DatasetError as err:
        assert str(err) and "\n" not in str(err)
        return "refused"  # one line, nothing changed
    repaired = DatasetReader(copy)
    assert repaired.verify() == []
    after = {i: repaired.sample(i, check=True) for i in repaired.indices}
    assert sorted(after) == sorted(originals)
    for i, s in after.items():
        assert np.array_equal(s.output, originals[i].output) and np.array_equal(s.raw, originals[i].raw)
    return "repaired"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard=st.integers(0, 1), where=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_a_flipped_byte_is_never_used_silently(small, tmp_path_factory, shard, where, flip):
    copy = tmp_path_factory.mktemp("c") / "ds"
    _check_flip(small, copy, shard, lambda _path, n: int(where * n), flip)


def _member_byte(suffix: str):
    def at(path, _n):
        with tarfile.open(path) as tar:
            info = next(i for i in tar if i.name.endswith(suffix))
        return info.offset_data + info.size // 2

    return at


@pytest.mark.parametrize(
    ("where", "outcome"),
    [(_member_byte("raw.npy"), "repaired"), (_member_byte("json"), "repaired"),
     (lambda _p, n: n - 1, "read unchanged"),  # the end-of-archive zero blocks
     (lambda _p, _n: 0, "refused")],  # the first member's name: not a name of ours
    ids=["raw-data", "json-data", "tar-padding", "member-name"],
)  # fmt: skip
def test_each_kind_of_corruption_meets_its_outcome(small, tmp_path, where, outcome):
    assert _check_flip(small, tmp_path / "ds", 0, where, 0x41) == outcome
