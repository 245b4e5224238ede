"""One plan captured in parts (`capture --part K/N`, one killed with SIGKILL and resumed) and merged
(`dataset merge`) into the very dataset one uninterrupted capture makes; every refusal names the
part and the index and writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import procs
import pytest
from capture_helpers import fast_profile

from hil_tune.capture.dataset import DatasetError, DatasetReader, index_tar
from hil_tune.capture.executor import run_parts
from hil_tune.capture.loop import CaptureSettings, run_capture
from hil_tune.capture.merge import merge_parts
from hil_tune.capture.parts import Part
from hil_tune.capture.prepare import PlanRequest, prepare_capture
from hil_tune.errors import InputError
from hil_tune.profiles import load_profile
from hil_tune.train.data import SweepDataset

SOURCES = ["bundled:coffee", "bundled:chelsea", "bundled:rocket", "bundled:astronaut", "bundled:immunohistochemistry"]
OPTIONS = {"sensor_size": 32}


def _request(part: Part | None = None) -> PlanRequest:
    return PlanRequest(SOURCES, samples_per_source=3, patch=32, region="fast", shard_size=4, part=part)


def _capture(out: Path, profile_path: Path, part: Part | None = None) -> None:
    prof = load_profile(profile_path)
    prepare_capture(out, _request(part), resume=False, profile=lambda: prof)
    result = run_capture(out, CaptureSettings("sim", OPTIONS))
    assert not result.failed


def _cli(out: Path, profile_path: Path, *extra: str) -> subprocess.Popen:
    args = ["capture", "--out", str(out), "--profile", str(profile_path), "--region", "fast", "--patch", "32",
            "-m", "3", "--shard-size", "4", "-o", "sensor_size=32", "-o", "latency_s=0.05",
            *[a for s in SOURCES for a in ("--source", s)], *extra]  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "hil_tune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def fingerprint(root: Path) -> tuple[bytes, dict[str, bytes], list[tuple]]:
    shards = {p.name: p.read_bytes() for p in sorted((root / "shards").iterdir())}
    rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
    latest = {r["index"]: (r["index"], r["status"], r["file"], r["json_sha256"]) for r in rows}
    return (root / "plan.json").read_bytes(), shards, sorted(latest.values())


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """One whole capture and three parts of the same plan, part 2 killed mid-way and resumed."""
    tmp = tmp_path_factory.mktemp("parts")
    profile_path = fast_profile(tmp)
    _capture(tmp / "whole", profile_path)
    _capture(tmp / "p1", profile_path, Part(1, 3))
    _capture(tmp / "p3", profile_path, Part(3, 3))
    proc = _cli(tmp / "p2", profile_path, "--part", "2/3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp / "p2" / "pending").glob("*.tar")):
        time.sleep(0.003)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(DatasetReader(tmp / "p2")) < 4, "the kill must land mid-part"
    again = _cli(tmp / "p2", profile_path, "--resume")
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()  # type: ignore[union-attr]
    return tmp, profile_path


def test_parts_own_whole_shards_and_merge_into_what_one_capture_makes(captured, tmp_path):
    tmp, _ = captured
    sizes = [len(DatasetReader(tmp / p)) for p in ("p1", "p2", "p3")]
    assert sizes == [4, 4, 7] and sum(sizes) == len(DatasetReader(tmp / "whole"))  # 4 shards of 4 (last: 3)
    res = subprocess.run([sys.executable, "-m", "hil_tune.cli", "dataset", "merge", str(tmp_path / "merged"),
                          str(tmp / "p3"), str(tmp / "p1"), str(tmp / "p2")], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "15 samples in 4 shards" in res.stdout
    assert fingerprint(tmp_path / "merged") == fingerprint(tmp / "whole")  # byte for byte, plan included
    assert DatasetReader(tmp_path / "merged").verify() == []
    assert len(SweepDataset(tmp_path / "merged")) == 15  # every reader takes it
    devices = {DatasetReader(tmp / p).sample(DatasetReader(tmp / p).indices[0]).meta["device"]["serial_number"]
               for p in ("p1", "p2", "p3")}  # fmt: skip
    assert devices == {"sim-0"}  # each sample records the device that took it


def _refused(out: Path, parts: list[Path], says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        merge_parts(out, parts)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.merging-*"))  # nothing half-done


def test_merge_refuses_and_names_the_part_and_index(captured, tmp_path):
    tmp, profile_path = captured
    p1, p2, p3 = tmp / "p1", tmp / "p2", tmp / "p3"
    _refused(tmp_path / "m", [p1, p3], r"4 planned sample\(s\) are in no part \(first: 4\)")
    _refused(tmp_path / "m", [p1, p2, p3, tmp / "whole"], r"sample 0 is in two parts: .*p1 and .*whole")
    other = tmp_path / "other"
    prof = load_profile(profile_path)
    prepare_capture(other, PlanRequest(SOURCES, 3, 32, seed=9, region="fast", shard_size=4, part=Part(1, 3)),
                    resume=False, profile=lambda: prof)  # fmt: skip
    _refused(tmp_path / "m", [p1, p2, p3, other], "captured from another plan")
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(p3), str(broken)], check=True)
    shard = broken / "shards" / "00002.tar"
    data = bytearray(shard.read_bytes())
    offset, size = index_tar(shard)[9]["out.png"]
    data[offset + size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    _refused(tmp_path / "m", [p1, p2, broken], r"broken: sample 9: member out.png fails its checksum")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        merge_parts(tmp_path / "taken", [p1, p2, p3])
    assert (tmp_path / "taken" / "x").read_text() == "mine"


def test_part_settings_are_checked_before_anything_is_written(captured, tmp_path):
    tmp, profile_path = captured
    prof = load_profile(profile_path)
    with pytest.raises(InputError, match=r"--part '4/3': expected K/N"):
        Part.parse("4/3")
    with pytest.raises(InputError, match="at most 4 parts"):
        prepare_capture(tmp_path / "five", _request(Part(1, 5)), resume=False, profile=lambda: prof)
    assert not (tmp_path / "five" / "plan.json").exists()
    with pytest.raises(InputError, match="holds part 2/3"):
        prepare_capture(tmp / "p2", _request(Part(1, 3)), resume=True, profile=lambda: prof)


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_parts_as_tasks_of_an_executor_give_the_same_dataset(captured, tmp_path, executor):
    """Two parts on two workers (a Dask LocalCluster of 2 processes, or local processes), merged:
    the dataset of one uninterrupted capture."""
    tmp, profile_path = captured
    prof = load_profile(profile_path)
    plan = _request().build(prof)
    settings = CaptureSettings("sim", OPTIONS)
    result = run_parts(tmp_path / "ds", plan, settings, 2, executor=executor, workers=2)
    assert result.merged is not None and result.merged.samples == 15
    assert sorted(r["written"] for r in result.parts.values()) == [7, 8]  # shards 0-1 and 2-3
    assert fingerprint(tmp_path / "ds") == fingerprint(tmp / "whole")
    with pytest.raises(InputError, match="not empty"):
        run_parts(tmp_path / "ds", plan, settings, 2, executor=executor)


def _two_nodes(dataset: Path, out: Path, epochs: int, *extra: str) -> None:
    """Proxy training launched as two torchrun 'nodes' (one process each, node ranks 0 and 1, node 0
    hosting the rendezvous at --master-addr): how `torchrun --nnodes 2` runs on two machines, with
    the run folder on a shared filesystem. (Two agents given the same c10d endpoint on one host may
    both try to host its store; a static rendezvous names the host.)"""
    port = procs.free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def node(rank: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "-m", "hil_tune.cli", "train", "proxy", str(dataset), "--out", str(out), "--epochs", str(epochs),
                "--width", "8", "--depth", "2", "--batch", "4", *extra]  # fmt: skip

    nodes = [procs.start(node(r), env) for r in (0, 1)]
    deadline = time.monotonic() + 600
    for code, err in [procs.finish(p, max(1.0, deadline - time.monotonic())) for p in nodes]:
        assert code == 0, err[-3000:]


def test_proxy_training_across_two_nodes_checkpoints_and_resumes_as_on_one(tmp_path):
    from capture_helpers import fast_sweep

    root, _ = fast_sweep(tmp_path)
    _two_nodes(root, tmp_path / "whole", 3)
    _two_nodes(root, tmp_path / "cut", 2)
    _two_nodes(root, tmp_path / "cut", 3, "--resume")
    whole, cut = (json.loads((tmp_path / d / "model.json").read_text()) for d in ("whole", "cut"))
    assert whole["world_size"] == cut["world_size"] == 2
    losses = [[h["train_loss"] for h in side["history"]] for side in (whole, cut)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # the resumed run continues exactly
