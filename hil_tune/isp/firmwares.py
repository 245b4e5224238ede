"""The built-in firmwares the `sim` driver can run, by name."""

from __future__ import annotations

from hil_tune.isp.foreign import ForeignISP
from hil_tune.isp.handset import HandsetISP
from hil_tune.isp.pipeline import SyntheticISP
from hil_tune.isp.studio import StudioISP

FIRMWARES = {"synthetic": SyntheticISP, "foreign": ForeignISP, "handset": HandsetISP, "studio": StudioISP}


def isp_for(firmware: str, profile: object) -> SyntheticISP:
    if firmware not in FIRMWARES:
        raise ValueError(f"unknown firmware {firmware!r}; known: {', '.join(FIRMWARES)}")
    return FIRMWARES[firmware](profile)  # type: ignore[arg-type]
