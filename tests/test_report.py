"""report.html in a real headless browser (Debian's chromium): it renders its tables and images."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hil_tune.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_run(out):
    """Artefacts of the shape a demo run writes (the demo itself is too slow for the test suite)."""
    for rel in (
        "render/contact_sheet.png",
        "sweep/preview.png",
        "proxy/curves.png",
        "proxy/report/sensitivity.png",
        "proxy/report/side_by_side.png",
        "predictor/report/grid.png",
        "predictor/curves.png",
    ):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(out / rel)
    (out / "live").mkdir()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green")]
    frames[0].save(out / "live/preview.gif", save_all=True, append_images=frames[1:])
    stats = {"mean": 29.1, "median": 29.3, "worst5": 25.0, "n": 12}
    return {
        "started": "2026-11-26 10:00:00", "finished": "2026-11-26 10:09:00",
        "steps": [
            {"name": "render", "what": "bundled photos", "seconds": 40, "command": "hil-tune demo render",
             "artefacts": {"contact_sheet": "render/contact_sheet.png"}},
            {"name": "capture", "what": "sweep", "seconds": 60, "command": "hil-tune capture ...",
             "facts": {"samples": 72, "samples_per_s": 1.2, "median_clipped": 0.004},
             "artefacts": {"preview": "sweep/preview.png"}},
            {"name": "proxy", "what": "grey-box", "seconds": 90, "command": "hil-tune train proxy ...",
             "facts": {"fidelity": {"unseen_images": {"psnr": stats, "ssim": {"mean": 0.9}},
                                    "unseen_settings": {"psnr": stats, "ssim": {"mean": 0.91}}},
                       "spearman": 0.97, "held_out_sources": ["bundled:rocket"]},
             "artefacts": {"curves": "proxy/curves.png", "sensitivity": "proxy/report/sensitivity.png",
                           "side_by_side": "proxy/report/side_by_side.png"}},
            {"name": "predictor", "what": "attention", "seconds": 120, "command": "hil-tune train predictor ...",
             "facts": {"table": {m: {"psnr": 20.0 + i, "ssim": 0.8, "loss": 0.3 - i / 20} for i, m in
                                 enumerate(("default", "expert", "predicted", "oracle"))},
                       "margins_db": {"predicted_minus_expert": 1.0, "expert_minus_default": 1.0,
                                      "oracle_minus_predicted": 1.0}, "expert_budget": 24, "oracle_budget": 12},
             "artefacts": {"grid": "predictor/report/grid.png", "curves": "predictor/curves.png"}},
            {"name": "live", "what": "serial board", "seconds": 20, "command": "hil-tune live ...",
             "facts": {"frames": 200, "fps": 30.0, "pushes": 3, "pushed_params": 20, "skipped_in_flight": 0,
                       "rate_limited": 1, "bad_predictions": 0, "faults": 0, "bytes_per_push": 46,
                       "latency_ms": {"predict": {"p50": 2.0, "p99": 3.0, "n": 200}}},
             "artefacts": {"preview": "live/preview.gif"}},
        ],
    }  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it with apt where it can)")
def test_report_renders_its_tables_and_images_in_a_headless_browser(tmp_path):
    path = write_report(tmp_path, fake_run(tmp_path))
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = res.stdout
    assert res.returncode == 0 and "<table" in dom, res.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert total and int(total.group(1)) == 8
    assert loaded and loaded.group(1) == total.group(1), "every figure must load"
    assert dom.count("<table") == 6
    assert "Spearman" in dom and "predicted" in dom and "missing figure" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", path.as_uri()], capture_output=True, timeout=120)  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10, "the page must render visible content"


def test_a_missing_figure_is_named_not_silently_dropped(tmp_path):
    run = fake_run(tmp_path)
    (tmp_path / "sweep/preview.png").unlink()
    html = write_report(tmp_path, run).read_text()
    assert "missing figure: sweep/preview.png" in html


def test_every_table_has_as_many_header_cells_as_each_row_has_cells(tmp_path):
    """A column without a header (the predictor's loss had none) is a table a reader misreads."""
    html = write_report(tmp_path, fake_run(tmp_path)).read_text()
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    assert len(tables) == 6
    for t in tables:
        header = len(re.findall(r"<th[ >]", t))
        rows = [len(re.findall(r"<td[ >]", r)) for r in re.findall(r"<tr>(?:(?!<th).)*?</tr>", t, flags=re.S)]
        assert rows and all(n == header for n in rows), (header, rows, t[:300])
    assert "mean loss (optimised)" in html
