"""The house rules of the code tree, checked by reading the source (no imports are executed).

- No import cycle between the modules of ``connectors/`` and ``pipelines/``, counting imports made
  inside functions too (a lazy import only hides a cycle until someone moves it up).
- No module imports another module's underscore-prefixed name, neither ``from m import _x`` nor
  ``m._x`` on a module it imported: what other modules use is public and named so.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("connectors", "pipelines")


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = ROOT) -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[_module_name(path, root)] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(tree: ast.Module, modules: dict[str, ast.Module]) -> Iterator[tuple[ast.stmt, str, str | None]]:
    """(statement, module imported, name taken from it or None) for project imports anywhere."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (node, sub, None) if sub in modules else (node, node.module, alias.name)


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    return {
        name: {target for _, target, _ in _imports(tree, modules)} - {name} for name, tree in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def private_imports(modules: dict[str, ast.Module]) -> list[str]:
    """Every place a module takes another module's underscore-prefixed name."""
    bad = []
    for name, tree in modules.items():
        bound: dict[str, str] = {}  # local name -> project module it refers to
        for node, target, taken in _imports(tree, modules):
            if taken is not None and _private(taken) and target != name:
                bad.append(f"{name}:{node.lineno} imports {target}.{taken}")
            if taken is None and target != name:
                for alias in node.names:  # type: ignore[attr-defined]
                    local = alias.asname or alias.name.split(".")[-1]
                    if isinstance(node, ast.Import) and alias.asname is None:
                        continue  # `import a.b` binds `a`; attribute chains are not used that way here
                    bound[local] = target if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and _private(node.attr)
                and bound[node.value.id] in modules
            ):
                bad.append(f"{name}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return bad


def test_no_import_cycles() -> None:
    modules = _modules()
    assert len(modules) > 40, "the walk found too few modules: is ROOT right?"
    assert cycles(import_graph(modules)) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports(_modules()) == []


@pytest.fixture
def tangled(tmp_path: Path) -> dict[str, ast.Module]:
    """A small tree with one cycle (through a lazy import) and both kinds of private import."""
    files = {
        "connectors/__init__.py": "",
        "connectors/a.py": "from connectors.b import thing\n_hidden = 1\n",
        "connectors/b.py": "def thing():\n    from connectors import c\n    return c\n",
        "connectors/c.py": "from connectors.a import _hidden\n",
        "connectors/d.py": "from connectors import a\nx = a._hidden\n",
        "pipelines/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return _modules(tmp_path)


def test_the_checks_find_what_they_look_for(tangled: dict[str, ast.Module]) -> None:
    assert cycles(import_graph(tangled)) == [["connectors.a", "connectors.b", "connectors.c"]]
    assert sorted(private_imports(tangled)) == [
        "connectors.c:1 imports connectors.a._hidden",
        "connectors.d:2 uses connectors.a._hidden",
    ]


def shadowed_names(root: Path = ROOT) -> list[str]:
    """Globals of a package's ``__init__`` that share a submodule's name.

    Importing ``pkg.sub`` sets ``pkg.sub`` to the module, so a function ``sub`` defined or
    imported in ``pkg/__init__.py`` is silently replaced by it (a connector package keeps its code
    in ``__init__.py``, where this happened once: ``records.text`` vs ``letta/text.py``).
    """
    bad = []
    for package in PACKAGES:
        for init in sorted((root / package).rglob("__init__.py")):
            subs = {p.stem for p in init.parent.glob("*.py")} | {
                p.name for p in init.parent.iterdir() if (p / "__init__.py").exists()
            }
            subs.discard("__init__")
            pkg = _module_name(init, root)
            tree = ast.parse(init.read_text(encoding="utf-8"))
            for node in tree.body:
                names: list[str] = []
                if isinstance(node, ast.FunctionDef | ast.ClassDef):
                    names = [node.name]
                elif isinstance(node, ast.Assign):
                    names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                elif isinstance(node, ast.ImportFrom) and node.module != pkg:
                    names = [a.asname or a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.asname or a.name.split(".")[0] for a in node.names]
                bad += [f"{pkg}:{node.lineno} {name}" for name in names if name in subs]
    return bad


def test_no_package_global_is_shadowed_by_a_submodule() -> None:
    assert shadowed_names() == []


def test_shadowing_is_found(tmp_path: Path) -> None:
    (tmp_path / "connectors" / "sys").mkdir(parents=True)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "connectors" / "sys" / "__init__.py").write_text(
        "from connectors.kit.records import text\nfrom connectors.sys import helper\n", encoding="utf-8"
    )
    (tmp_path / "connectors" / "sys" / "text.py").write_text("", encoding="utf-8")
    (tmp_path / "connectors" / "sys" / "helper.py").write_text("", encoding="utf-8")
    assert [line.split(":", 1)[1] for line in shadowed_names(tmp_path)] == ["1 text"]


def test_duckdb_is_opened_only_through_the_one_helper() -> None:
    """``connectors.kit.sql.duckdb_connect`` sets the session to UTC (naive times are UTC); a bare
    ``duckdb.connect`` elsewhere would take the machine's zone."""
    bare = [
        f"{name}:{node.lineno}"
        for name, tree in _modules().items()
        if name != "connectors.kit.sql"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "connect"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "duckdb"
    ]
    assert bare == []
