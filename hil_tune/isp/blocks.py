"""The ISP's blocks in one table: what each is called, which knobs it reads, its numpy function
and the name of its differentiable twin. Formulas more than one block or model uses live once,
beside their block: the blur radius rule (`isp.sharpen.blur_radius`) and JFIF's YCbCr
(`isp.jpeg.JFIF_YCBCR`).

Why one table: the numpy pipeline, the grey-box proxy and the foreign firmware all need to know
which knobs belong to which block, and a parameter list written twice drifts. Everything that
names a block's knobs reads them here (`params_of`). The differentiable twins live in
`hil_tune.models.isp_blocks` (named here, not imported: the numpy ISP runs in capture workers that
need no torch); a test holds both sides to this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hil_tune.isp.ccm import color_matrix
from hil_tune.isp.demosaic import demosaic
from hil_tune.isp.denoise import denoise_mosaic
from hil_tune.isp.jpeg import jpeg_roundtrip
from hil_tune.isp.sharpen import unsharp_mask
from hil_tune.isp.tone import tone_uint8
from hil_tune.isp.white_balance import white_balance


@dataclass(frozen=True)
class Block:
    name: str
    params: tuple[str, ...]  # the knobs it reads, in the profile's order
    numpy: Callable[..., Any]  # the synthetic ISP's implementation (hil_tune.isp)
    differentiable: str | None  # its twin in hil_tune.models.isp_blocks; None where a proxy learns it


BLOCKS: tuple[Block, ...] = (
    Block("denoise", ("filter-strength", "noise-type", "noise-var", "lambda-thr3d", "mu2"), denoise_mosaic, None),
    Block("white_balance", ("gain-r", "gain-g", "gain-b", "digital-gain"), white_balance, "white_balance"),
    Block("demosaic", (), demosaic, "demosaic"),
    Block("ccm", tuple(f"ccm{i}{j}" for i in range(3) for j in range(3)), color_matrix, "color_matrix"),
    Block("sharpen", ("usm-amount", "usm-sigma"), unsharp_mask, "unsharp_mask"),
    Block("tone", (), tone_uint8, "tone"),
    Block("jpeg", (), jpeg_roundtrip, "jpeg"),
)

# The knobs of the synthetic ISP: every block's, in pipeline order (the paper's 20).
REQUIRED_PARAMS: tuple[str, ...] = tuple(p for b in BLOCKS for p in b.params)


def params_of(name: str) -> tuple[str, ...]:
    """The knobs block `name` reads."""
    for block in BLOCKS:
        if block.name == name:
            return block.params
    raise KeyError(f"no ISP block {name!r}; blocks: {', '.join(b.name for b in BLOCKS)}")
