"""The layering rule: imports point one way, ``cli -> report, sweep -> analysis, calibrate -> simulation
-> engine -> plan -> spec`` (docs/architecture.md). Everything may import ``errors`` and ``version``;
nothing inside the package imports the package root (it only re-exports the public names).

Every ``import`` statement of every module is read with ``ast``, those inside functions included;
imports under ``if TYPE_CHECKING:`` do not count (they never run). An import from one layer into
a layer of the same rank (sideways) or a higher one (upwards) fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "secmoe_sim"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Rank of each layer: a module may import only layers of a lower rank (and its own layer).
LAYER_RANKS = {
    "spec": 0,
    "plan": 1,
    "engine": 2,
    "simulation": 3,
    "analysis": 4,
    "calibrate": 4,
    "report": 5,
    "sweep": 5,
    "cli": 6,
    "__main__": 7,
}
SHARED = {"errors", "version"}  # importable from every layer


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside the package (``secmoe_sim.plan.costs`` -> ``plan``);
    ``""`` for the package root, None for a module outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every module the source imports, at any depth, outside TYPE_CHECKING blocks.

    ``from a.b import c`` names ``a.b.c`` when that is a module of the package, else ``a.b``;
    relative imports are resolved against ``module``.
    """
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                for orelse in child.orelse:  # the else branch runs
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                for alias in child.names:
                    candidate = f"{base}.{alias.name}"
                    found.append((child.lineno, candidate if _is_module(candidate) else base))
            visit(child)

    visit(ast.parse(source))
    return found


def _is_module(dotted: str) -> bool:
    if not dotted.startswith(PACKAGE + "."):
        return False
    path = ROOT.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None if the arrow points the right way."""
    source_layer, target_layer = layer_of(importer), layer_of(imported)
    if target_layer is None or source_layer == "":  # outside the package; the root re-exports anything
        return None
    if target_layer == "":
        return "imports the package root (it only re-exports the public names; import the module itself)"
    if target_layer in SHARED or target_layer == source_layer:
        return None
    if source_layer in SHARED:
        return f"{source_layer} is shared by every layer and may import nothing of the project"
    source_rank, target_rank = LAYER_RANKS[source_layer], LAYER_RANKS[target_layer]
    if target_rank > source_rank:
        return f"imports upwards: {source_layer} (rank {source_rank}) -> {target_layer} (rank {target_rank})"
    if target_rank == source_rank:
        return f"imports sideways: {source_layer} -> {target_layer} (same rank {source_rank})"
    return None


def violations_in(path: Path) -> list[str]:
    module = module_name(path)
    problems = []
    for line, imported in imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
        reason = violation(module, imported)
        if reason:
            problems.append(f"{path.relative_to(ROOT.parent)}:{line}: {imported}: {reason}")
    return problems


def package_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_top_level_module_and_folder_has_a_layer():
    for entry in ROOT.iterdir():
        name = entry.stem
        if entry.name in ("__init__.py", "py.typed", "__pycache__", "scenarios", "stacks", "hardware"):  # code-free data folders
            continue
        if entry.is_dir() or entry.suffix == ".py":
            assert name in LAYER_RANKS or name in SHARED, f"{entry.name} belongs to no layer: add it to docs/architecture.md"


def test_at_most_eight_top_level_modules():
    modules = [p.name for p in ROOT.glob("*.py")]
    assert len(modules) <= 8, modules


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    assert violations_in(path) == []


def test_the_checker_catches_an_upward_a_sideways_and_a_root_import():
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import secmoe_sim.spec.units\n"
        "if TYPE_CHECKING:\n"
        "    from secmoe_sim.report.outputs import write_run_outputs\n"
        "def later():\n"
        "    from secmoe_sim.simulation import simulate\n"
        "    from secmoe_sim import __version__\n"
        "    from secmoe_sim.calibrate import fit\n"
    )
    found = imported_modules(source, "secmoe_sim.analysis.alpha", is_package=False)
    reasons = {name: violation("secmoe_sim.analysis.alpha", name) for _, name in found}
    assert reasons["secmoe_sim.spec.units"] is None
    assert reasons["secmoe_sim.simulation"] is None
    assert "secmoe_sim.report.outputs" not in reasons  # only under TYPE_CHECKING
    assert "package root" in reasons["secmoe_sim"]
    assert "sideways" in reasons["secmoe_sim.calibrate.fit"]
    assert "upwards" in violation("secmoe_sim.plan.costs", "secmoe_sim.engine.layer")
    assert "upwards" in violation("secmoe_sim.spec.hardware", "secmoe_sim.plan.topology")
    assert violation("secmoe_sim.cli.commands", "secmoe_sim.errors") is None
    assert "may import nothing" in violation("secmoe_sim.errors", "secmoe_sim.spec.units")
