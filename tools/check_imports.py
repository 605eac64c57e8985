"""Check that pliant-core's imports run one way: from higher modules down, with no circle.

Reads every module under ``core/src/pliant`` with :mod:`ast` (nothing is imported), takes
each ``import``/``from ... import`` that names a core module, at module level or inside a
function alike (a lazy import is still an import), and leaves out those under
``if TYPE_CHECKING:`` (they never run). Then:

* a **circle** among core's files fails: each one found is printed as ``a -> b -> a``;
* an import from a module to one of a **higher layer** fails. The layers are listed in
  :data:`LAYERS`, bottom first, and are the same as in ``docs/architecture.md``;
* a **plugin** (``plugins/*/src``) or a code example of the plugin guide
  (``docs/plugin-guide.md``) that imports from pliant-core anything but
  :mod:`pliant.plugin`, the plugin author's surface, fails.

``pliant/__init__.py`` (the package face) is left out of the graph: it imports nothing at
run time but by name, on first attribute access, and every module sits below it.

Run ``python tools/check_imports.py``; exit status 1 when something is wrong.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "core" / "src"
PLUGIN_SURFACE = "pliant.plugin"

#: Bottom first. A module belongs to the layer of the longest entry that names it or a
#: package above it (``pkg.*``: the package's submodules, not the package itself); it may
#: import from its own layer (without a circle) and from every layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pliant._lazy", "pliant._version", "pliant.defaults", "pliant.errors", "pliant.settings"),
    ("pliant.config", "pliant.errorfile", "pliant._bootstrap"),
    # What a backend implements: interfaces and value types, no machinery.
    ("pliant.metrics.types", "pliant.events.types", "pliant.timer.types",
     "pliant.rendezvous.api", "pliant.rendezvous.net", "pliant.rendezvous.store"),
    ("pliant._delivery",),
    ("pliant.metrics.api", "pliant.events.api"),
    # Backends pliant-core provides itself, and the machinery they are built from.
    ("pliant.metrics.console", "pliant.events.jsonl", "pliant.timer.fifo",
     "pliant.rendezvous.*"),
    ("pliant.registrations",),
    ("pliant.hookspecs",),
    ("pliant._builtin",),
    ("pliant.plugins",),
    # The faces: what users import. They wire the api to the registry (metrics, events) and
    # find a backend by name (rendezvous.create_handler).
    ("pliant.metrics", "pliant.events", "pliant.timer", "pliant.rendezvous"),
    ("pliant.agent",),
    ("pliant.plugin", "pliant.testing"),  # the plugin author's surface and kits
    ("pliant.launch",),
    ("pliant.cli", "pliant.__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs, wherever it stands."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The core modules ``path`` imports (a name imported from a package counts as the
    submodule when it is one, else as the package)."""
    me = module_name(path)
    package = me if is_package(path) else me.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:  # `import pliant.x.y` with y an attribute
                target = target.rpartition(".")[0]
            if target and target != "pliant" and target != me:
                found.add(target)
    return found


def _outside_surface(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of each import of a pliant-core module other than the surface."""
    for node in _imports(tree):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if not node.level else [])
        for name in names:
            if (name == "pliant" or name.startswith("pliant.")) and name != PLUGIN_SURFACE:
                yield node.lineno, name


def plugin_problems() -> list[str]:
    """Imports of core from the plugins' sources and from the plugin guide's examples."""
    problems = []
    for path in sorted(REPO.glob("plugins/*/src/**/*.py")):
        for line, name in _outside_surface(ast.parse(path.read_text(), str(path))):
            problems.append(f"{path.relative_to(REPO)}:{line} imports {name}: a plugin imports "
                            f"pliant only from {PLUGIN_SURFACE}")
    guide = REPO / "docs" / "plugin-guide.md"
    # Its last section shows a program that uses pliant without a plugin: not plugin code.
    text = guide.read_text().split("\n## Without entry points", 1)[0]
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", text, re.M | re.S)
    for block in blocks:
        try:
            tree = ast.parse(block)
        except SyntaxError:  # an abridged example: its import lines are still read
            tree = ast.parse("\n".join(line for line in block.splitlines()
                                       if line.startswith(("import ", "from "))))
        for _, name in _outside_surface(tree):
            problems.append(f"{guide.relative_to(REPO)}: an example imports {name}: plugin "
                            f"authors import pliant only from {PLUGIN_SURFACE}")
    return problems


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            prefix, submodules_only = entry.removesuffix(".*"), entry.endswith(".*")
            under = module.startswith(prefix + ".")
            if (under or (module == prefix and not submodules_only)) and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a
    circle through its members, plus modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def circle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One circle inside a component, to show the reader: a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def main() -> int:
    paths = {module_name(p): p for p in sorted(ROOT.joinpath("pliant").rglob("*.py"))}
    known = set(paths)
    graph = {name: imported_modules(path, known) for name, path in paths.items()
             if name != "pliant"}
    problems: list[str] = []
    unplaced = sorted(name for name in graph if layer_of(name) < 0)
    for name in unplaced:
        problems.append(f"{name} belongs to no layer: add it to LAYERS in {Path(__file__).name} "
                        "and to docs/architecture.md")
    for component in find_cycles(graph):
        problems.append(f"import circle among {len(component)} modules ({', '.join(component)}),"
                        " for example: " + " -> ".join(circle_through(component, graph)))
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(name), layer_of(target)
            if low >= 0 and high > low:
                problems.append(f"{name} (layer {low}) imports {target} from a higher layer "
                                f"({high})")
    problems += plugin_problems()
    if problems:
        print("\n".join(problems))
        return 1
    print(f"imports of {len(graph)} core modules run one way, with no circle; the plugins and "
          f"the plugin guide import core only from {PLUGIN_SURFACE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
