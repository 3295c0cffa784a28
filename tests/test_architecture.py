"""The package's shape, checked from the source (ast, nothing imported): every part has an import rule
and follows it, no import cycles between modules or between parts, no private names imported across
modules, no function over MAX_LINES lines and no module over MAX_MODULE_LINES.

A part is a top-level module (config.py -> "config") or a subpackage (data/ -> "data"). Imports inside
functions count (the package imports torch and its own heavy modules lazily, so most of its imports
are there). Each KNOWN_* set lists exceptions still to fix: a new violation fails, and an entry that
no longer applies fails too, so each set only shrinks. They are empty: fix the code rather than add
to them. The test_*_flag_* tests show that every check fails on a violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xfads_cli"
MAX_LINES = 80
MAX_MODULE_LINES = 600

# part -> the other parts it may import (a part's modules import each other freely, cycles aside).
# The data flow: data -> model -> training -> outputs, the library (LIBRARY, then scoring, which runs
# models through it, then fitting) above them, the commands and the sweep (which runs fits) side by side
# above the library, and cli.py on top. LEAVES may be imported by every part.
LEAVES = {"errors", "atomic", "config"}
LIBRARY = {"runs"}
BELOW_COMMANDS = LEAVES | {"data", "model", "train", "outputs", "scoring", "heap", "progress"} | LIBRARY
ALLOWED: dict[str, set[str]] = {
    "xfads_cli": set(),  # the package __init__: `import xfads_cli` loads nothing else
    "errors": set(),
    "atomic": {"errors"},
    "config": {"errors"},
    "heap": set(),  # stderr UI and allocator tuning serve the commands only
    "progress": set(),
    "data": LEAVES,  # numpy only: no model, no torch
    "model": LEAVES,  # tensors in, tensors out: never a SpikeData
    "train": LEAVES | {"data", "model"},
    "outputs": LEAVES | {"data"},  # writers and plots: never a model or a score
    **{name: LEAVES | {"data", "model", "train", "outputs"} | LIBRARY for name in LIBRARY},
    "scoring": LEAVES | {"data"} | LIBRARY,  # numpy scores; evaluate.py runs models through runs/inference
    "fitting": BELOW_COMMANDS,  # `xfads fit` as a library function, which the sweep runs too
    "commands": BELOW_COMMANDS | {"fitting"},
    "sweep": BELOW_COMMANDS | {"fitting"},  # beside the commands, never importing them
    "api": BELOW_COMMANDS | {"fitting", "commands"},  # the Python API (the package `xfads`): above the commands
    "cli": BELOW_COMMANDS | {"commands", "sweep", "fitting"},
    "__main__": {"cli"},
}
KNOWN_LAYER_BREAKS: set[tuple[str, str]] = set()
KNOWN_PART_CYCLES: set[tuple[str, ...]] = set()
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()
KNOWN_LONG_FUNCTIONS: set[tuple[str, str]] = set()
KNOWN_LONG_MODULES: set[str] = set()


def modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(), filename=str(path)))
    return out


def imports(mods) -> list[tuple[str, str, str | None]]:
    """(importer, imported module, imported name or None) for every import of the package's own
    modules, at any depth of the importer."""
    found = []
    for name, (path, tree) in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(name, a.name, None) for a in node.names if a.name in mods]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:
                        found.append((name, sub, None))
                    elif target in mods:
                        found.append((name, target, a.name))
    return [f for f in found if f[0] != f[1]]


def layer(module: str) -> str:
    """The part a module belongs to: 'xfads_cli.data.load' -> 'data', 'xfads_cli.cli' -> 'cli'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_breaks(found: list[tuple[str, str, str | None]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs whose parts' rule (ALLOWED) does not let the one import the other; a
    part without a rule may import nothing."""
    return {(a, b) for a, b, _ in found if layer(a) != layer(b) and layer(b) not in ALLOWED.get(layer(a), set())}


def part_cycles(found: list[tuple[str, str, str | None]]) -> set[tuple[str, ...]]:
    """The sets of parts that import each other round a cycle, whatever modules carry the imports."""
    edges: dict[str, set[str]] = {}
    for a, b, _ in found:
        edges.setdefault(layer(a), set())
        edges.setdefault(layer(b), set())
        if layer(a) != layer(b):
            edges[layer(a)].add(layer(b))
    return {tuple(c) for c in cycles(edges)}


def check(found: set, known: set, fix: str, name: str) -> None:
    assert found - known == set(), fix
    assert known - found == set(), f"fixed: remove it from {name}"


def test_the_package_is_found():  # an empty walk would pass every check below
    names = set(modules())
    assert {"xfads_cli.cli", "xfads_cli.scoring.bits", "xfads_cli.data.spikedata"} <= names


def test_every_part_has_a_rule():
    parts = {layer(name) for name in modules()}
    assert parts - set(ALLOWED) == set(), "a new part: give it a rule in ALLOWED (the parts it may import)"
    assert set(ALLOWED) - parts == set(), "a part is gone: remove its rule from ALLOWED"
    unknown = {p for allowed in ALLOWED.values() for p in allowed} - parts
    assert unknown == set(), "ALLOWED names a part that does not exist"


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checks_flag_a_break_and_a_part_cycle():
    # the model reading a SpikeData, and two library parts importing each other through different modules
    assert layer_breaks([("xfads_cli.model.xfads", "xfads_cli.data.spikedata", "SpikeData")]) == {
        ("xfads_cli.model.xfads", "xfads_cli.data.spikedata")}
    assert layer_breaks([("xfads_cli.newpart", "xfads_cli.errors", None)]) != set()  # no rule: nothing allowed
    assert layer_breaks([("xfads_cli.scoring.evaluate", "xfads_cli.runs", "model_inputs")]) == set()
    found = [("xfads_cli.scoring.evaluate", "xfads_cli.runs", None), ("xfads_cli.runs", "xfads_cli.scoring.bits", None)]
    assert part_cycles(found) == {("runs", "scoring")}
    with pytest.raises(AssertionError, match="^new"):
        check({("a", "b")}, set(), "new", "KNOWN")  # a new violation fails
    with pytest.raises(AssertionError, match="remove it from KNOWN"):
        check(set(), {("a", "b")}, "new", "KNOWN")  # so does an exception that no longer applies


def test_no_import_cycles():
    mods = modules()
    edges = {name: set() for name in mods}
    for importer, imported, _ in imports(mods):
        edges[importer].add(imported)
    assert cycles(edges) == []


def test_no_part_level_import_cycles():
    check(part_cycles(imports(modules())), KNOWN_PART_CYCLES,
          "two parts import each other: move the shared code down a layer", "KNOWN_PART_CYCLES")


def test_imports_follow_the_data_flow():
    check(layer_breaks(imports(modules())), KNOWN_LAYER_BREAKS,
          "a module imports a part its part's rule (ALLOWED) does not list", "KNOWN_LAYER_BREAKS")


def test_no_private_names_imported_across_modules():
    private = {(a, b, n) for a, b, n in imports(modules()) if n and n.startswith("_") and not n.startswith("__")}
    check(private, KNOWN_PRIVATE_IMPORTS, "make the name public or move it where it is used", "KNOWN_PRIVATE_IMPORTS")


def test_no_function_over_the_line_limit():
    long = set()
    for name, (_, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_LINES:
                    long.add((name, node.name))
    check(long, KNOWN_LONG_FUNCTIONS, f"split functions over {MAX_LINES} lines", "KNOWN_LONG_FUNCTIONS")


def test_no_module_over_the_line_limit():
    long = {name for name, (path, _) in modules().items() if len(path.read_text().splitlines()) > MAX_MODULE_LINES}
    check(long, KNOWN_LONG_MODULES, f"split modules over {MAX_MODULE_LINES} lines by job", "KNOWN_LONG_MODULES")
