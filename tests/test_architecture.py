"""The house's rule, read from the code: one floor per role, each importing only the floors below it.

Bottom to top: the library (`atelier/`), `registry/`, `provenance/`, `stages/`, `flows/`, and the face (`app/`). A
stage module is an entry point: only the flows and the face import it. No circle of imports, and no private name
(`_x`) used outside the module that defines it. docs/architecture.md explains the floors; this test keeps them.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOORS = {"atelier": 1, "registry": 2, "provenance": 3, "stages": 4, "flows": 5, "app": 6}
STAGE_CALLERS = {"flows", "app"}  # who may import a stage module


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    file: str  # its path, relative to the root
    line: int
    target: str  # the imported module, dotted
    names: tuple[str, ...]  # names taken from it (`from target import a, b`), or () for `import target`


def modules(root: Path) -> dict[str, Path]:
    """Every module of the floors under `root`, by dotted name (a package by its own name)."""
    found = {}
    for top in FLOORS:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> list[Import]:
    """Every import of a floor's module by a floor's module, at any depth (a lazy import inside a function counts)."""
    known = modules(root)
    out = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        rel = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Import):
                out += [
                    Import(name, rel, node.lineno, a.name, ()) for a in node.names if a.name.split(".")[0] in FLOORS
                ]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if base.split(".")[0] not in FLOORS:
                    continue
                taken = tuple(a.name for a in node.names)
                submodules = [n for n in taken if f"{base}.{n}" in known]
                out += [Import(name, rel, node.lineno, f"{base}.{n}", ()) for n in submodules]
                rest = tuple(n for n in taken if n not in submodules)
                if rest or not submodules:
                    out.append(Import(name, rel, node.lineno, base, rest))
    return out


def floor(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def upward(found: list[Import]) -> list[str]:
    """Imports that run up a floor, or into a stage from anywhere but the flows and the face."""
    bad = []
    for i in found:
        if floor(i.target) > floor(i.module):
            bad.append(
                f"{i.file}:{i.line}: {i.module} (floor {floor(i.module)}) imports {i.target} "
                f"(floor {floor(i.target)}), a floor above it; move what it needs down"
            )
        elif (
            i.target.split(".")[0] == "stages" and i.module.split(".")[0] not in STAGE_CALLERS and i.target != "stages"
        ):
            if i.target != i.module:
                bad.append(
                    f"{i.file}:{i.line}: {i.module} imports the stage {i.target}; a stage is an entry point, "
                    "only flows/ and app/ import it: move what it needs into a floor below"
                )
    return bad


def circles(found: list[Import]) -> list[str]:
    """Each circle of imports between modules, named with the file and line of one import in it."""
    edges: dict[str, dict[str, Import]] = {}
    for i in found:
        if i.target != i.module:
            edges.setdefault(i.module, {}).setdefault(i.target, i)
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                ties = [e for m in sorted(group) for t, e in edges.get(m, {}).items() if t in group]
                out.append(
                    "circle "
                    + " <-> ".join(sorted(group))
                    + ": "
                    + "; ".join(f"{e.file}:{e.line} imports {e.target}" for e in ties)
                )

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def private_names(root: Path, found: list[Import]) -> list[str]:
    """Private names (`_x`, not dunders) taken from another module, by `from m import _x` or `m._x`."""
    bad = [
        f"{i.file}:{i.line}: {i.module} takes the private name {n} from {i.target}; make it public or move it"
        for i in found
        for n in i.names
        if n.startswith("_") and not n.startswith("__")
    ]
    for name, path in modules(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update(
                    {(a.asname or a.name.split(".")[0]): a.name for a in node.names if a.name.split(".")[0] in FLOORS}
                )
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FLOORS:
                aliases.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(
                    f"{path.relative_to(root)}:{node.lineno}: {name} uses the private name {node.attr} of "
                    f"{aliases[node.value.id]}; make it public or move it"
                )
    return bad


def problems(root: Path) -> list[str]:
    found = imports(root)
    return upward(found) + circles(found) + private_names(root, found)


def test_every_module_imports_only_floors_below_without_circles_or_private_names():
    assert problems(REPO) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_a_planted_upward_import_is_named_with_its_file_and_line(tmp_path):
    root = _tree(
        tmp_path,
        {
            "atelier/__init__.py": "",
            "atelier/io.py": "import os\n\ndef f():\n    from app import cli\n",
            "app/__init__.py": "",
            "app/cli.py": "from atelier import io\n",
        },
    )
    assert problems(root) == [
        "atelier/io.py:4: atelier.io (floor 1) imports app.cli (floor 6), a floor above it; move what it needs down",
        "circle app.cli <-> atelier.io: app/cli.py:1 imports atelier.io; atelier/io.py:4 imports app.cli",
    ]


def test_a_stage_used_as_a_library_a_circle_and_a_private_name_are_each_refused(tmp_path):
    root = _tree(
        tmp_path,
        {
            "atelier/__init__.py": "",
            "atelier/a.py": "from atelier.b import helper\n",
            "atelier/b.py": "from atelier import a\n\ndef helper(): ...\n",
            "provenance/__init__.py": "",
            "provenance/x.py": "from atelier.b import _hidden\nfrom atelier import a\na._secret()\n",
            "stages/__init__.py": "",
            "stages/clean.py": "def decode(): ...\n",
            "stages/ingest.py": "from stages.clean import decode\n",
            "flows/__init__.py": "",
            "flows/pipeline.py": "from stages import clean\n",
        },
    )
    found = problems(root)
    assert (
        "stages/ingest.py:1: stages.ingest imports the stage stages.clean; a stage is an entry point, only flows/ "
        "and app/ import it: move what it needs into a floor below" in found
    )
    assert any(p.startswith("circle atelier.a <-> atelier.b: atelier/a.py:1 imports atelier.b") for p in found)
    assert (
        "provenance/x.py:1: provenance.x takes the private name _hidden from atelier.b; make it public or move "
        "it" in found
    )
    assert any(
        p.startswith("provenance/x.py:3: provenance.x uses the private name _secret of atelier.a") for p in found
    )
    assert not any("flows/pipeline.py" in p for p in found)  # the flow may call a stage
    assert len(found) == 4
