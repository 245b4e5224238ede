"""The layering holds by test: no import cycle among hil_tune modules (function-level imports
included, since those are how cycles hide), no import of another module's private name, and no
function over 80 lines in hil_tune/ or drivers/ (the seven that were are now cut into named pieces)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ((ROOT / "hil_tune", "hil_tune"), (ROOT / "drivers", "hil_tune.drivers"))
MAX_LINES = 80


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for base, package in PACKAGES:
        for path in base.rglob("*.py"):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = (path, ast.parse(path.read_text()))
    return out


def _imports(name: str, path: Path, tree: ast.Module, known: set[str]) -> list[tuple[str, str]]:
    """(module imported, name taken from it) for every import statement anywhere in the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                target = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((full if full in known else target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return [(m, n) for m, n in found if m in known]


def test_no_import_cycle_among_hil_tune_modules():
    modules = _modules()
    graph = {m: {t for t, _ in _imports(m, p, tree, set(modules))} - {m} for m, (p, tree) in modules.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_imports_another_modules_private_name():
    modules = _modules()
    bad = [f"{m} takes {t}.{n}" for m, (p, tree) in modules.items()
           for t, n in _imports(m, p, tree, set(modules)) if n.startswith("_") and t != m]  # fmt: skip
    assert not bad, bad


def test_no_function_over_80_lines():
    found = {}
    for m, (_, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found[(m, node.name)] = lines
    assert not found, f"over {MAX_LINES} lines: {found}"


def test_one_table_of_isp_blocks_names_every_knob_once():
    """The pipeline, the proxy and the foreign firmware read one block table: the synthetic ISP's
    knobs are its blocks' knobs in order, each block's differentiable twin exists, and the proxy's
    knob groups are the table's."""
    from hil_tune.isp.blocks import BLOCKS, REQUIRED_PARAMS, params_of
    from hil_tune.models import isp_blocks, proxy
    from hil_tune.profiles import load_profile

    assert tuple(load_profile("synthetic").space.names) == REQUIRED_PARAMS
    assert len(set(REQUIRED_PARAMS)) == len(REQUIRED_PARAMS)  # no knob in two blocks
    for block in BLOCKS:
        assert block.differentiable is None or callable(getattr(isp_blocks, block.differentiable))
    assert tuple(params_of(b) for b in ("denoise", "white_balance", "ccm", "sharpen")) == (
        proxy.NR,
        proxy.WB,
        proxy.CCM,
        proxy.USM,
    )
    with pytest.raises(KeyError, match="no ISP block 'lens'"):
        params_of("lens")
