"""Predictor training data from any photos: a fresh crop and a fresh camera (unprocessing draw) of
every photo each epoch.

Why: the predictor needs RAW inputs and task targets, not ISP outputs, so it need not be limited to
the sweep's sources: the sweep fixes the profile and the region (and trains the proxy), while the
predictor sees as many scenes and cameras as there are photos and epochs. The crop is taken from
the sRGB photo first and only the crop is unprocessed, so a large photo costs a crop's worth.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hil_tune.capture.sources import BUNDLED_PREFIX, Source
from hil_tune.errors import InputError
from hil_tune.inputs import bundled_image, read_srgb, stable_seed
from hil_tune.isp.denoise import check_size
from hil_tune.profiles import Profile
from hil_tune.raw import CFA_PATTERNS, pack4
from hil_tune.unprocess import unprocess


@lru_cache(maxsize=64)
def _photo(location: str) -> np.ndarray:
    if location.startswith(BUNDLED_PREFIX):
        return bundled_image(location.removeprefix(BUNDLED_PREFIX))
    return read_srgb(location)


class ImageCrops(Dataset):
    """`per_image` random crops of `crop` pixels from each photo per epoch, each unprocessed with its
    own draw (seeded by photo, epoch and position: a resumed run sees the same crops)."""

    def __init__(self, sources: list[Source], profile: Profile, crop: int, per_image: int = 4, seed: int = 0) -> None:
        check_size(crop, crop, f"--crop {crop}")
        not_photos = [s.id for s in sources if s.kind not in ("srgb", "bundled")]
        if not_photos:
            raise InputError(f"predictor images need a reference: {', '.join(not_photos)} are not sRGB photos")
        if not sources:
            raise InputError("no training images")
        small = [s.id for s in sources if min(_photo(s.location).shape[:2]) < crop]
        if small:
            raise InputError(f"--crop {crop} is larger than {', '.join(small)}")
        self.sources, self.profile, self.crop = sources, profile, crop // 2 * 2
        self.per_image, self.seed, self.epoch = per_image, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources) * self.per_image

    def __getitem__(self, i: int) -> dict[str, Any]:
        source = self.sources[i % len(self.sources)]
        photo = _photo(source.location)
        draw_seed = stable_seed(source.id, self.seed) * 1_000_003 + self.epoch * 7919 + i
        rng = np.random.default_rng(draw_seed & 0xFFFFFFFF)
        h, w = photo.shape[:2]
        y = int(rng.integers(0, h - self.crop + 1)) // 2 * 2
        x = int(rng.integers(0, w - self.crop + 1)) // 2 * 2
        tone, gamma = self.profile.pipeline.tone, self.profile.pipeline.gamma
        window = photo[y : y + self.crop, x : x + self.crop]
        frame = unprocess(window, seed=draw_seed & 0x7FFFFFFF, tone=tone, gamma=gamma, source=source.id)
        norm = frame.normalized()
        assert frame.reference is not None
        return {
            "index": i,
            "mosaic": torch.from_numpy(norm[None]),
            "cfa": CFA_PATTERNS.index(frame.cfa),
            "raw": torch.from_numpy(np.ascontiguousarray(pack4(norm, frame.cfa).transpose(2, 0, 1))),
            # 8-bit, as a sweep stores references and evaluation scores against them
            "reference": torch.from_numpy(np.round(frame.reference.transpose(2, 0, 1) * 255).astype(np.float32) / 255),
            "source": source.id,
        }
