"""The synthetic software ISP: one module per block, each a pure function of (image, its parameters).

Block order (the paper's): noise reduction -> white balance + digital gain -> demosaic -> colour
matrix -> unsharp mask -> tone -> JPEG. `SyntheticISP` in `pipeline` runs them in that order.
"""

from hil_tune.isp.pipeline import REQUIRED_PARAMS, IspStages, SyntheticISP

__all__ = ["REQUIRED_PARAMS", "IspStages", "SyntheticISP"]
