"""Steps of `make demo` that are more than one library call.

Render step: every bundled photo (unprocessed to RAW) and every real RAW file in HIL_TUNE_RAW_DIR goes
through the synthetic ISP with the profile's defaults, with the parameters that undo the camera
(as-shot / unprocessing draws), and with a few Latin-hypercube parameter sets; a contact sheet shows
them side by side, because a person judges an ISP by looking.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from hil_tune.inputs import BUNDLED_IMAGES, bundled_frame, raw_dir_files
from hil_tune.isp import SyntheticISP
from hil_tune.params import ParamDict
from hil_tune.profiles import load_profile
from hil_tune.raw import RawFrame, read_raw
from hil_tune.ui import contact_sheet, progress


def _sources(size: int, seed: int, tone: str, gamma: float) -> list[tuple[str, RawFrame]]:
    frames = [(name, bundled_frame(name, seed=seed, tone=tone, gamma=gamma, crop=size)) for name in BUNDLED_IMAGES]
    return frames + [(path.stem, read_raw(path).center_crop(size, size)) for path in raw_dir_files()]


def render_bundled(
    out_dir: Path,
    *,
    size: int = 256,
    n_random: int = 3,
    region: str = "plausible",
    seed: int = 0,
    profile: str = "synthetic",
) -> Path:
    """Render every demo source with default, camera and random parameters; return the sheet's path."""
    prof = load_profile(profile)
    isp = SyntheticISP(prof)
    space = prof.space
    random_sets = space.sample_params(n_random, seed=seed, region=prof.get_region(region)) if n_random else []
    sources = _sources(size, seed, prof.pipeline.tone, prof.pipeline.gamma)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    record: dict[str, dict[str, ParamDict]] = {}
    with progress() as bar:
        task = bar.add_task("rendering", total=len(sources) * (2 + n_random))
        for name, frame in sources:
            settings: list[tuple[str, ParamDict]] = [
                ("default", space.defaults()),
                ("camera", isp.camera_params(frame)),
            ]
            settings += [(f"random{k}", p) for k, p in enumerate(random_sets)]
            cells: list[tuple[str, np.ndarray]] = []
            if frame.reference is not None:
                ref8 = (frame.reference * 255 + 0.5).astype(np.uint8)
                Image.fromarray(ref8).save(out_dir / f"{name}_reference.png")
                cells.append(("reference", ref8))
            else:  # camera files have no reference; a grey cell keeps the columns aligned
                cells.append(("(no reference)", np.full((*frame.shape, 3), 235, np.uint8)))
            for label, params in settings:
                bar.update(task, description=f"{name}: {label}")
                img = isp.run_frame(frame, params)
                Image.fromarray(img).save(out_dir / f"{name}_{label}.png")
                cells.append((label, img))
                record.setdefault(name, {})[label] = params
                bar.advance(task)
            rows.append((name, cells))
    (out_dir / "params.json").write_text(json.dumps(record, indent=1))
    sheet_path = out_dir / "contact_sheet.png"
    contact_sheet(rows).save(sheet_path)
    return sheet_path
