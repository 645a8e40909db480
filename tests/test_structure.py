"""The shape of the package, read from the source with `ast` (nothing is imported).

- A folder is a layer: every subpackage of rnngen is one of LAYERS; the modules at the top are the
  core, except the Python API and the command line, which are layers of their own.
- No import cycle between rnngen modules, counting imports inside functions too (cli.py excepted:
  it imports inside its commands only to keep `--help` fast).
- Dependencies point one way: each layer imports only the layers MAY_IMPORT lists for it (core ->
  data -> models -> generate -> training -> api -> export -> analysis -> serve -> cli, and the
  inference side, the API, the export and the server, never imports training).
- docs/structure.md, the map of the package, names exactly the modules of every layer.
- No function over MAX_FUNCTION_LINES lines and no class over MAX_CLASS_LINES lines (a Click
  command counts only its body), except the known offenders listed below, which are to shrink.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rnngen"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 250

STRUCTURE_DOC = PACKAGE.parent / "docs" / "structure.md"

# The layers, lowest first, and what each may import besides itself. A subpackage is one layer (its
# folder name); the modules at the top of the package are the core, except the Python API and the
# command line. The API, the export and the server are the inference side: they load checkpoints, never train.
LAYERS = ["core", "data", "models", "generate", "training", "api", "export", "analysis", "serve", "cli"]
MAY_IMPORT = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "generate": {"core", "data", "models"},
    "training": {"core", "data", "models", "generate"},
    "api": {"core", "data", "models", "generate"},
    "export": {"core", "data", "models", "generate", "api"},
    "analysis": {"core", "data", "models", "generate", "training", "api"},
    "serve": {"core", "data", "models", "generate", "api"},
    "cli": set(LAYERS),
}
TOP_LEVEL_LAYERS = {"api": "api", "cli": "cli", "__main__": "cli"}

# Known offenders, to shrink; a new one fails the test, and so does an entry that no longer offends.
OVERSIZED: set[str] = set()


def module_name(path: Path) -> str:
    """rnngen/data/prepare.py -> "data.prepare"; rnngen/cli.py -> "cli"; a package's __init__ -> "data"."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    if "." in module:
        return module.split(".")[0]
    return TOP_LEVEL_LAYERS.get(module, module if module in LAYERS else "core")


def internal_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The rnngen modules a module imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rnngen" or node.module.startswith("rnngen."):
                base = node.module[len("rnngen.") :] if node.module != "rnngen" else ""
                for alias in node.names:
                    child = f"{base}.{alias.name}" if base else alias.name
                    found.add(child if child in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("rnngen.") :] for a in node.names if a.name.startswith("rnngen."))
    found.discard("")
    return found


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    graph = {}
    for name, tree in trees.items():
        if name == "cli":
            tree = ast.Module(body=[n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)])
        graph[name] = internal_imports(tree, set(trees)) - {name}
    return graph


def modules_in_cycles(graph: dict[str, set[str]]) -> set[str]:
    """Every module that lies on some import cycle (the strongly connected groups of more than one)."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {name: reachable(name) for name in graph}
    return {name for name in graph if name in reach[name]}


def sizes() -> dict[str, tuple[str, int]]:
    """Kind ("class" or "function") and lines of each, as 'rnngen/x.py:Class.method' -> (kind, lines)."""
    found = {}

    def visit(node: ast.AST, prefix: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                found[f"{path}:{name}"] = (kind, _lines(child))
                visit(child, name + ".", path)

    for name, tree in modules().items():
        visit(tree, "", f"rnngen/{name.replace('.', '/')}.py")
    return found


def _lines(node) -> int:
    """Lines from the def to the end; a Click command (decorated with a .command()) counts its body only."""
    click_command = any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        for d in getattr(node, "decorator_list", [])
    )
    if click_command:
        body = node.body[1:] if ast.get_docstring(node) else node.body
        return node.end_lineno - body[0].lineno + 1
    return node.end_lineno - node.lineno + 1


def test_no_import_cycles():
    graph = import_graph()
    assert modules_in_cycles(graph) == set()


def test_every_module_has_a_layer():
    assert {layer_of(m) for m in modules()} <= set(LAYERS), "a new folder must be added to LAYERS and MAY_IMPORT"
    assert set(MAY_IMPORT) == set(LAYERS)


def test_dependencies_point_down_the_layers():
    wrong = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) != layer_of(module) and layer_of(target) not in MAY_IMPORT[layer_of(module)]
    )
    assert wrong == []


def test_may_import_only_points_down():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    assert all(rank[low] < rank[layer] for layer, lows in MAY_IMPORT.items() for low in lows - {layer})


def documented_modules() -> dict[str, set[str]]:
    """The modules the map's table names per layer: the backticked names in its "modules" column."""
    found = {}
    for line in STRUCTURE_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and cells[0] in LAYERS:
            found[cells[0]] = set(re.findall(r"`([\w.]+)`", cells[2]))
    return found


def test_the_map_names_every_module():
    actual: dict[str, set[str]] = {}
    for module in modules():
        if not (PACKAGE / module).is_dir():  # a subpackage's __init__ holds only its docstring
            actual.setdefault(layer_of(module), set()).add(module.split(".")[-1])
    assert documented_modules() == actual, "docs/structure.md's table must list exactly the modules of each layer"


def test_size_limits():
    limits = {"class": MAX_CLASS_LINES, "function": MAX_FUNCTION_LINES}
    oversized = {name for name, (kind, lines) in sizes().items() if lines > limits[kind]}
    assert oversized - OVERSIZED == set(), "split these, or (only if the split must wait) list them in OVERSIZED"
    assert OVERSIZED - oversized == set(), "these are small enough now: remove them from OVERSIZED"


def test_the_cycle_finder_finds_cycles():
    assert modules_in_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {"a", "b", "c"}
    assert modules_in_cycles({"a": {"b"}, "b": set()}) == set()
