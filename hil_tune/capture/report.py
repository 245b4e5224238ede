"""What a dataset holds, at a glance: counts, parameter coverage, and whether its images are ruined.

The clipped-pixel histogram is the quick test of a sampling region: a sweep over the paper's full
ranges shows itself as a pile-up at the right end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hil_tune.capture.dataset import DatasetReader
from hil_tune.ui import contact_sheet, param_label

CLIP_BINS = np.linspace(0.0, 1.0, 11)


def dataset_info(reader: DatasetReader) -> dict[str, Any]:
    plan = reader.plan
    names = plan.load_profile().space.names
    written = list(reader.indices)
    metas = [reader.sample(i).meta for i in written]
    enc = np.array([m["encoded_applied"] for m in metas]) if metas else np.zeros((0, len(names)))
    clipped = np.array([m["clipped_share"] for m in metas])
    coverage = {}
    for j, name in enumerate(names):
        col = enc[:, j] if len(enc) else np.zeros(0)
        hist = np.histogram(col, bins=10, range=(0, 1))[0].tolist() if len(col) else [0] * 10
        coverage[name] = {"min": float(col.min()) if len(col) else None, "max": float(col.max()) if len(col) else None,
                          "histogram": hist}  # fmt: skip
    per_source: dict[str, int] = {}
    for m in metas:
        per_source[m["source"]] = per_source.get(m["source"], 0) + 1
    return {
        "path": str(reader.folder.root),
        "profile": plan.profile,
        "region": plan.region.name,
        "seed": plan.seed,
        "planned": len(plan.rows),
        "written": len(written),
        "failed": {str(i): r.get("error", "") for i, r in reader.failed().items()},
        # done in the manifest, held by no readable file: a shard deleted or damaged
        "missing": reader.missing(),
        "sources": per_source,
        "coverage_encoded": coverage,
        "clipped_share": {
            "bins": CLIP_BINS.round(2).tolist(),
            "histogram": np.histogram(clipped, bins=CLIP_BINS)[0].tolist(),
            "median": float(np.median(clipped)) if len(clipped) else None,
            "over_half": float((clipped > 0.5).mean()) if len(clipped) else None,
        },
    }


def preview(reader: DatasetReader, out: Path, *, sources: int = 4, per_source: int = 8, tile: int = 160) -> Path:
    """Outputs across the sweep for a few sources (like the paper's Fig. 1), labelled with the two
    parameters that vary most within each row."""
    rows = []
    for source, indices in list(reader.sources().items())[:sources]:
        picked = indices[:: max(1, len(indices) // per_source)][:per_source]
        samples = [reader.sample(i) for i in picked]
        enc = np.array([s.meta["encoded_applied"] for s in samples])
        names = list(samples[0].meta["params_applied"])
        keys = [names[j] for j in np.argsort(-enc.std(axis=0))[:2]] if len(samples) > 1 else names[:2]
        cells = []
        if samples[0].reference is not None:
            cells.append(("reference", samples[0].reference))
        cells += [(param_label(s.meta["params_applied"], keys), s.output) for s in samples]
        rows.append((Path(source).name.removeprefix("bundled:"), cells))
    if not rows:
        raise ValueError("the dataset has no written samples to preview")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet: Image.Image = contact_sheet(rows, tile=tile)
    sheet.save(out)
    return out
