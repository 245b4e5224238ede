"""Dataset tools (info, verify, preview), the torch datasets, real RAW sources, and the check that
the synthetic profile's `plausible` region mostly makes usable images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from capture_helpers import fast_profile
from PIL import Image

from hil_tune.capture.dataset import DatasetFolder
from hil_tune.capture.loop import CaptureSettings, clipped_share, run_capture
from hil_tune.capture.plan import build_plan
from hil_tune.capture.sources import resolve_sources
from hil_tune.inputs import BUNDLED_IMAGES, bundled_frame
from hil_tune.isp import SyntheticISP
from hil_tune.profiles import load_profile
from hil_tune.raw import pack4
from hil_tune.train.data import SweepDataset, SweepStream, read_bytes, split_by_source

SOURCES = ["bundled:coffee", "bundled:chelsea", "bundled:rocket", "bundled:astronaut"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    prof = load_profile(fast_profile(tmp))
    plan = build_plan(prof, resolve_sources(SOURCES), samples_per_source=3, patch=32, region="fast", shard_size=5)
    folder = DatasetFolder(tmp / "ds")
    folder.create(plan)
    run_capture(folder.root, CaptureSettings("sim", {"sensor_size": 32}, profile=str(tmp / "fast.toml")))
    return folder.root


def cli(*args):
    return subprocess.run([sys.executable, "-m", "hil_tune.cli", *args], capture_output=True, text=True, timeout=300)


def test_info_reports_counts_coverage_and_clipping(dataset):
    res = cli("dataset", "info", str(dataset), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["written"] == info["planned"] == 12 and info["failed"] == {}
    assert info["sources"] == {s: 3 for s in SOURCES}
    assert sum(info["clipped_share"]["histogram"]) == 12
    assert info["coverage_encoded"]["filter-strength"]["max"] == 0.0  # the region held it at 0
    assert info["coverage_encoded"]["gain-r"]["max"] > info["coverage_encoded"]["gain-r"]["min"]
    text = cli("dataset", "info", str(dataset))
    assert text.returncode == 0 and "clipped pixels per sample" in text.stdout


def test_verify_and_preview(dataset, tmp_path):
    res = cli("dataset", "verify", str(dataset))
    assert res.returncode == 0 and "12 samples checked, 0 problem(s)" in res.stdout
    out = tmp_path / "sheet.png"
    assert cli("dataset", "preview", str(dataset), "--out", str(out), "--sources", "2").returncode == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[0] > 2 * 100 and sheet.std() > 10  # two labelled rows of real pictures
    assert cli("dataset", "verify", str(dataset.parent / "nope")).returncode == 2


def test_map_style_and_streaming_datasets_agree_and_split_by_source(dataset):
    train_src, val_src = split_by_source(SOURCES, 0.25, seed=0)
    assert len(val_src) == 1 and not train_src & val_src and train_src | val_src == set(SOURCES)
    train, val = SweepDataset(dataset, train_src), SweepDataset(dataset, val_src)
    assert len(train) == 9 and len(val) == 3
    assert {train[i]["source"] for i in range(len(train))} == train_src
    item = val[0]
    assert item["raw"].shape == (4, 16, 16) and item["output"].shape == (3, 32, 32)
    assert item["encoded"].shape == (20,) and item["raw"].min() >= 0 and item["raw"].max() <= 1
    assert "reference" in item
    shards = sorted(str(p) for p in (dataset / "shards").glob("*.tar"))
    streamed = list(SweepStream(shards, opener=read_bytes, sources=val_src))
    assert [s["index"] for s in streamed] == [val[i]["index"] for i in range(len(val))]
    assert all(torch.equal(a["output"], val[i]["output"]) for i, a in enumerate(streamed))
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    batch = next(iter(loader))
    assert batch["raw"].shape == (4, 4, 16, 16)


def test_packed_raw_is_the_normalised_mosaic(dataset):
    ds = SweepDataset(dataset)
    sample = ds.reader.sample(ds.indices[0])
    meta = sample.meta
    black = np.asarray(meta["black_level"], dtype=np.float32).reshape(2, 2)
    norm = (sample.raw - np.tile(black, (16, 16))) / (meta["white_level"] - np.tile(black, (16, 16)))
    expected = pack4(np.clip(norm, 0, 1).astype(np.float32), meta["cfa"]).transpose(2, 0, 1)
    assert np.allclose(ds[0]["raw"].numpy(), expected)


def test_plausible_region_mostly_makes_usable_images():
    """The clipping histogram that chose the shipped region: plausible keeps the median clipped share
    under 10%; the paper's full ranges clip far more often."""
    prof = load_profile("synthetic")
    isp = SyntheticISP(prof)
    frames = [bundled_frame(n).center_crop(64, 64) for n in BUNDLED_IMAGES]
    shares = {}
    for region in ("plausible", "full"):
        sets = prof.space.sample_params(48, seed=5, region=prof.get_region(region))
        # Noise reduction does not decide clipping; leaving it off keeps this test fast.
        shares[region] = np.array(
            [
                clipped_share(isp.run_frame(frames[i % len(frames)], {**p, "filter-strength": 0.0}))
                for i, p in enumerate(sets)
            ]
        )
    assert np.median(shares["plausible"]) < 0.10
    assert (shares["plausible"] > 0.5).mean() < 0.05
    assert np.mean(shares["full"]) > 2 * np.mean(shares["plausible"])


def test_a_real_raw_file_is_swept_in_patches_with_its_cfa_phase(raw_dir, tmp_path):
    kodak = raw_dir / "RAW_KODAK_DC50.KDC"
    prof = load_profile(fast_profile(tmp_path))
    plan = build_plan(prof, resolve_sources([str(kodak)]), samples_per_source=3, patch=64, region="fast")
    assert plan.sources[0]["cfa"] == "GRBG" and plan.sources[0]["patches"] == (512 // 64) * (768 // 64)
    folder = DatasetFolder(tmp_path / "real")
    folder.create(plan)
    result = run_capture(folder.root, CaptureSettings("sim", {"sensor_size": 32}, profile=str(tmp_path / "fast.toml")))
    assert result.written == 3
    ds = SweepDataset(folder.root)
    assert ds.reader.sample(0).meta["cfa"] == "GRBG" and "reference" not in ds[0]


@pytest.mark.parametrize("hostile", ["../../evil.raw.npy", "/tmp/hil-tune-evil.raw.npy", "symlink", "hardlink"])
def test_a_shard_with_hostile_member_names_is_refused_by_every_reader(dataset, tmp_path, hostile):
    """Names a writer of ours never makes: refused with one line by verify, info and training, and
    nothing is ever extracted."""
    import io
    import shutil
    import tarfile

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    shard = sorted((copy / "shards").glob("*.tar"))[0]
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo(hostile if hostile[0] in "./" else f"00000000.{hostile}")
        if hostile == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif hostile == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "00000000.raw.npy"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    for args in (["dataset", "verify", str(copy)], ["dataset", "info", str(copy)],
                 ["train", "proxy", str(copy), "--out", str(tmp_path / "run"), "--epochs", "1"]):  # fmt: skip
        res = cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr and "unexpected member" in res.stderr, res.stderr
    assert not (tmp_path / "evil.raw.npy").exists() and not (tmp_path.parent / "evil.raw.npy").exists()
    assert not (tmp_path / "run").exists()


def _flip_in_member(shard, member_suffix, index=0, at=-8):
    """Flip one byte inside a member of a shard, in place (the tar stays whole)."""
    import tarfile

    with tarfile.open(shard) as tar:
        info = tar.getmember(f"{index:08d}.{member_suffix}")
        offset = info.offset_data + (info.size + at if at < 0 else at)
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_a_corrupt_raw_member_stops_training_and_is_captured_again_on_resume(dataset, tmp_path):
    import shutil

    from hil_tune.capture.dataset import DatasetError, DatasetReader

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    shard = copy / "shards" / "00000.tar"
    before = DatasetReader(copy).sample(3, check=True)
    _flip_in_member(shard, "raw.npy", index=2)
    with pytest.raises(DatasetError, match=r"sample 2: member raw\.npy fails its checksum"):
        [SweepDataset(copy)[i] for i in range(5)]
    res = cli("train", "proxy", str(copy), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert res.returncode == 2 and "sample 2: member raw.npy fails its checksum" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    settings = CaptureSettings("sim", {"sensor_size": 32}, profile=str(dataset.parent / "fast.toml"))
    result = run_capture(copy, settings)
    assert len(result.recaptured) == 1 and "sample 2: member raw.npy" in result.recaptured[0]
    assert result.written == 12 and DatasetReader(copy).verify() == []
    assert (copy / "quarantine" / "00000.tar.0").exists()  # the corrupt shard is kept, not deleted
    again = DatasetReader(copy)
    assert np.array_equal(again.sample(3, check=True).raw, before.raw)
    clean = DatasetReader(dataset).sample(2, check=True)
    assert np.array_equal(again.sample(2, check=True).output, clean.output)  # made again, the same


def test_an_edited_json_member_and_an_edited_plan_fail_verify(dataset, tmp_path):
    """The JSON member is covered by the manifest's checksum, the plan's profile by its hash."""
    import io
    import shutil
    import tarfile

    from hil_tune.capture.dataset import DatasetReader, tar_bytes

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    shard = copy / "shards" / "00000.tar"
    samples = {}
    with tarfile.open(shard) as tar:
        for info in tar:
            stem, _, suffix = info.name.partition(".")
            samples.setdefault(int(stem), {})[suffix] = tar.extractfile(info).read()
    meta = json.loads(samples[1]["json"])
    meta["encoded_applied"][0] = meta["encoded_applied"][0] + 0.25
    samples[1]["json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    shard.write_bytes(tar_bytes(sorted(samples.items())))
    assert DatasetReader(copy).verify() == ["sample 1: member json fails its checksum (manifest)"]
    plan = json.loads((copy / "plan.json").read_text())
    plan["profile_data"]["pipeline"]["jpeg_quality"] = 10
    (copy / "plan.json").write_text(json.dumps(plan))
    res = cli("dataset", "verify", str(copy))
    assert res.returncode != 0 and "does not match its recorded hash" in res.stdout + res.stderr
    assert io  # imported for symmetry with the hostile-names test


def test_info_names_samples_a_missing_shard_held(dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    (copy / "shards" / "00001.tar").unlink()  # samples 5-9
    res = cli("dataset", "info", str(copy), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["missing"] == [5, 6, 7, 8, 9], res.stderr
    text = cli("dataset", "info", str(copy))
    assert "5 sample(s) the manifest marks done are in no readable file" in text.stderr
    assert "Traceback" not in text.stderr
