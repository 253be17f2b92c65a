"""The package's shape, read from its source (nothing is imported): no import cycle between seqkd modules, the
subpackages in layers, no function longer than MAX_LINES, no private name (`_foo`) taken from another seqkd module.

`python tests/test_layout.py` prints the subpackages' import graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

SEQKD = Path(__file__).resolve().parents[1] / "seqkd"
MAX_LINES = 60
# Declarative tables, long by nature: one `add_argument` per flag, nothing to split.
LONG_ALLOWED = {"seqkd.cli.main.build_parser"}  # the argparse table of every subcommand
# The subpackages (and top-level modules) from the bottom up: each may import only those before it.
LAYERS = ["seqkd.util", "seqkd.data", "seqkd.models", "seqkd.inference", "seqkd.training", "seqkd.distill",
          "seqkd.compress", "seqkd.config", "seqkd.reproduce", "seqkd.cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SEQKD.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(SEQKD.rglob("*.py"))}


def imports(tree: ast.Module, known: set[str]) -> list[tuple[str, list[ast.alias], int]]:
    """Every seqkd import anywhere in the module (top level, functions, TYPE_CHECKING blocks): (the module it
    loads, the names it takes, line); `from seqkd.pkg import mod` loads the module seqkd.pkg.mod."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(a.name, [], n.lineno) for a in n.names if a.name.split(".")[0] == "seqkd"]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").split(".")[0] == "seqkd":
            subs = [a for a in n.names if f"{n.module}.{a.name}" in known]
            out += [(f"{n.module}.{a.name}", [], n.lineno) for a in subs]
            names = [a for a in n.names if a not in subs]
            if names:
                out.append((n.module, names, n.lineno))
    return out


def graph(mods: dict[str, ast.Module]) -> dict[str, set[str]]:
    known = set(mods)
    return {m: {target for target, _, _ in imports(tree, known) if target != m} for m, tree in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `g` as a path [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(g):
        if v not in state and (found := visit(v)):
            return found
    return None


def package(module: str) -> str:
    """The subpackage a module belongs to (seqkd.data.corpus -> seqkd.data); top-level modules are their own."""
    return ".".join(module.split(".")[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, targets in g.items():
        out.setdefault(package(m), set()).update(package(t) for t in targets if package(t) != package(m))
    out.pop("seqkd", None)  # seqkd/__init__.py and __main__.py
    return out


def upward(g: dict[str, set[str]]) -> list[str]:
    """The imports of a package graph that go to the same or a later layer."""
    return [f"{p} imports {t}" for p, targets in sorted(g.items()) if p in LAYERS
            for t in sorted(targets) if LAYERS.index(t) >= LAYERS.index(p)]


def long_functions(mods: dict[str, ast.Module]) -> list[str]:
    out = []
    for m, tree in mods.items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = n.end_lineno - n.lineno + 1
                if lines > MAX_LINES and f"{m}.{n.name}" not in LONG_ALLOWED:
                    out.append(f"{m}.{n.name} (line {n.lineno}): {lines} lines")
    return out


def private_imports(mods: dict[str, ast.Module]) -> list[str]:
    """`from seqkd.x import _name`, and `mod._name` where `mod` is a seqkd module this module imported."""
    known = set(mods)
    out = []
    for m, tree in mods.items():
        aliases = {}
        for target, names, line in imports(tree, known):
            out += [f"{m}:{line}: {target}.{a.name}" for a in names if _private(a.name)]
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("seqkd"):
                aliases.update({a.asname or a.name: f"{n.module}.{a.name}" for a in n.names
                                if f"{n.module}.{a.name}" in known})
            elif isinstance(n, ast.Import):
                aliases.update({a.asname: a.name for a in n.names if a.asname and a.name in known})
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                    and _private(n.attr)):
                out.append(f"{m}:{n.lineno}: {aliases[n.value.id]}.{n.attr}")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_import_cycle_between_modules():
    g = graph(modules())
    assert len(g) > 40 and "seqkd.training.trainer" in g["seqkd.reproduce.stages"]  # the graph is read at all
    assert find_cycle(g) is None, f"import cycle: {' -> '.join(find_cycle(g))}"


def test_subpackages_import_only_lower_layers():
    """The subpackages are layers in the order of LAYERS (docs/ARCHITECTURE.md draws it): each imports only
    layers before it, so there is no cycle between them either."""
    g = package_graph(graph(modules()))
    assert set(g) <= set(LAYERS) | {"seqkd.__main__"}, f"a subpackage missing from LAYERS: {set(g) - set(LAYERS)}"
    assert not upward(g), f"imports against the layer order: {upward(g)}"
    assert find_cycle(g) is None


def test_functions_are_short():
    assert not long_functions(modules()), f"functions over {MAX_LINES} lines: {long_functions(modules())}"


def test_no_private_name_from_another_module():
    assert not private_imports(modules()), f"private names used across modules: {private_imports(modules())}"


def test_the_checks_catch_what_they_check():
    """Each check fails on a small made-up case."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    fake = {"seqkd.x": ast.parse("from seqkd.y import _hidden\nfrom seqkd import y\ny._other()\n"),
            "seqkd.y": ast.parse("def f():\n" + "    pass\n" * MAX_LINES + "\ndef g():\n    from seqkd.x import a\n")}
    assert find_cycle(graph(fake)) is not None  # the import inside g() counts
    assert len(private_imports(fake)) == 2
    assert long_functions(fake) == [f"seqkd.y.f (line 1): {MAX_LINES + 1} lines"]
    assert upward({"seqkd.data": {"seqkd.util", "seqkd.training"}}) == ["seqkd.data imports seqkd.training"]


if __name__ == "__main__":
    for pkg, targets in sorted(package_graph(graph(modules())).items()):
        print(f"{pkg:20s} -> {', '.join(sorted(targets)) or '-'}")
