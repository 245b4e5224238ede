"""Install a plug-in package into a test's folder the way pip installs one: its code plus a
dist-info with entry_points.txt, found by importlib.metadata once the folder is on sys.path."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_plugin(root: Path, package: str, code: str, entry_points: dict[str, str]) -> Path:
    """Write `package/__init__.py` and its dist-info under `root`; entry_points: name -> 'mod:Class'
    in the hil_tune.drivers group. Returns `root` (to put on sys.path or PYTHONPATH)."""
    pkg = root / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(code))
    dist = root / f"{package}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[hil_tune.drivers]\n{lines}")
    return root


# A third-party ISP no built-in firmware makes: the negative of the synthetic ISP's output.
INK_DRIVER = """
    from hil_tune.drivers.sim import SimDriver

    class InkDriver(SimDriver):
        name = "ink"

        def _grab(self, raw, deadline):
            grab = super()._grab(raw, deadline)
            grab.image = 255 - grab.image
            return grab
    """
