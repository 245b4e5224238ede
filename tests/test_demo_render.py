import json

import numpy as np
from PIL import Image

from hil_tune.demo import render_bundled
from hil_tune.inputs import BUNDLED_IMAGES, raw_dir_files


def test_render_writes_pngs_params_and_contact_sheet(tmp_path):
    sheet = render_bundled(tmp_path, size=32, n_random=1, seed=0)
    assert sheet.is_file() and sheet.name == "contact_sheet.png"
    names = list(BUNDLED_IMAGES) + [p.stem for p in raw_dir_files()]
    record = json.loads((tmp_path / "params.json").read_text())
    assert sorted(record) == sorted(names)
    for name in names:
        assert set(record[name]) == {"default", "camera", "random0"}
        for label in ("default", "camera", "random0"):
            img = np.asarray(Image.open(tmp_path / f"{name}_{label}.png"))
            assert img.shape == (32, 32, 3)
    # bundled photos keep their reference; the camera parameters bring the render closer to it
    ref = np.asarray(Image.open(tmp_path / "coffee_reference.png")).astype(float)
    err = {
        k: np.abs(np.asarray(Image.open(tmp_path / f"coffee_{k}.png")).astype(float) - ref).mean()
        for k in ("default", "camera")
    }
    assert err["camera"] < err["default"]
    assert Image.open(sheet).size[0] > 32 * 4
