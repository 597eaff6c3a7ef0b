"""The package's layout shows the data flow (docs/architecture.md): no import cycle
between its packages, no import of another module's private name, and the library never
imports the command line or the stages."""
import ast
import collections
from pathlib import Path

import astrocal

SRC = Path(astrocal.__file__).resolve().parent


def _typing_only_nodes(tree):
    """The nodes inside ``if TYPE_CHECKING:`` blocks: imports for type hints only, never run."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
            if name == "TYPE_CHECKING":
                ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports(runtime_only=False):
    """``[(importing module, imported module, names)]`` of every import of an astrocal
    module in the package (``from ... import`` and plain ``import astrocal.x``),
    function-level ones included; ``runtime_only`` leaves out those under
    ``if TYPE_CHECKING:`` (type hints only: they never run, so they close no cycle)."""
    out = []
    for path in SRC.rglob("*.py"):
        parts = ("astrocal",) + path.relative_to(SRC).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _typing_only_nodes(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                out += [(mod, a.name, []) for a in node.names
                        if a.name == "astrocal" or a.name.startswith("astrocal.")]
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "astrocal" or target.startswith("astrocal."):
                out.append((mod, target, [a.name for a in node.names]))
    return out


def _unit(module):
    """The package (``lab``, ``model``, ...) or top-level module a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "astrocal"


def test_no_import_cycle_between_packages():
    deps = collections.defaultdict(set)
    for mod, target, names in _imports(runtime_only=True):
        targets = [f"astrocal.{n}" for n in names] if target == "astrocal" else [target]
        for t in targets:
            a, b = _unit(mod), _unit(t)
            # the package's root (its version, the leap-second setup), its error tree and
            # the forwarding of moved paths are used by everything
            if a != b and "astrocal" not in (a, b) and b not in ("errors", "_moved"):
                deps[a].add(b)
    # cycles of any length, by depth-first search
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(deps.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(deps):
        if start not in state:
            visit(start, [start])
    assert not cycles, f"import cycles between packages: {cycles}"


def test_no_import_of_another_modules_private_name():
    found = [f"{mod} imports {name} from {target}" for mod, target, names in _imports()
             for name in names if name.startswith("_") and not name.startswith("__")]
    assert not found, found


def test_the_library_never_imports_the_command_line_or_the_stages():
    found = [f"{mod} imports {target}" for mod, target, _ in _imports()
             if _unit(target) in ("cli", "stages") and _unit(mod) not in ("cli", "stages")
             and mod.split(".")[-1] != "__main__"]
    assert not found, found
