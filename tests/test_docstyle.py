"""One docstring style and typed signatures (issue 20): every public function and every
public method of a public class has type hints on its parameters and its return, and a
numpydoc docstring (a ``Parameters`` section when it takes parameters, a ``Returns`` or
``Yields`` section when it returns something); a function-level import of an astrocal
module carries a ``# lazy:`` comment saying why it is not at the top of the module."""
import ast
from pathlib import Path

import pytest

import astrocal

SRC = Path(astrocal.__file__).parent

def _public_functions(tree):
    """``(qualified name, node, is_method)`` of the public module-level functions and the
    public methods of public classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node, False
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not item.name.startswith("_")):
                    yield f"{node.name}.{item.name}", item, True


def _decorators(node):
    names = set()
    for d in node.decorator_list:
        while isinstance(d, ast.Call):
            d = d.func
        names.add(d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", ""))
    return names


def _section(doc, title):
    lines = doc.splitlines()
    return any(a.strip() == title and set(b.strip()) == {"-"} and len(b.strip()) == len(title)
               for a, b in zip(lines, lines[1:]))


def function_problems(node, is_method):
    """What a public function's signature and docstring lack (a list of strings)."""
    problems = []
    decorators = _decorators(node)
    args = node.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if is_method and "staticmethod" not in decorators and params:
        params = params[1:]  # self / cls
    if args.vararg:
        params.append(args.vararg)
    if args.kwarg:
        params.append(args.kwarg)
    unhinted = [a.arg for a in params if a.annotation is None]
    if unhinted:
        problems.append(f"no type hint on {', '.join(unhinted)}")
    setter = any(n in ("setter", "deleter") for n in decorators)
    if node.returns is None and not setter:
        problems.append("no return type hint")
    doc = ast.get_docstring(node)
    if not doc:
        return problems + ["no docstring"]
    if "property" in decorators or setter or "cached_property" in decorators:
        return problems
    if params and not _section(doc, "Parameters"):
        problems.append("no numpydoc Parameters section")
    returns_none = isinstance(node.returns, ast.Constant) and node.returns.value is None
    if (node.returns is not None and not returns_none
            and not (_section(doc, "Returns") or _section(doc, "Yields"))):
        problems.append("no numpydoc Returns section")
    return problems


def lazy_import_problems(tree, source_lines):
    """Function-level imports of astrocal modules without a ``# lazy:`` comment on the
    import's line or the line above it."""
    problems = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            ours = ((isinstance(node, ast.ImportFrom)
                     and (node.level > 0 or (node.module or "").split(".")[0] == "astrocal"))
                    or (isinstance(node, ast.Import)
                        and any(a.name.split(".")[0] == "astrocal" for a in node.names)))
            if not ours:
                continue
            around = " ".join(source_lines[max(node.lineno - 2, 0):node.end_lineno])
            if "# lazy:" not in around:
                problems.append(f"line {node.lineno}: function-level import without '# lazy:' reason")
    return problems


def module_problems(path):
    source = path.read_text()
    tree = ast.parse(source)
    problems = lazy_import_problems(tree, source.splitlines())
    for name, node, is_method in _public_functions(tree):
        problems += [f"{name} (line {node.lineno}): {p}" for p in function_problems(node, is_method)]
    return problems


MODULES = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("rel", MODULES)
def test_public_functions_are_typed_and_documented(rel):
    problems = module_problems(SRC / rel)
    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)


def test_the_checker_finds_what_it_should():
    source = '''
def f(a, b: int):
    """One line."""
    from astrocal import errors
    return a


def g(a: int) -> int:
    """Do.

    Parameters
    ----------
    a : int
        A.

    Returns
    -------
    int
    """
    # lazy: heavy optional import
    from astrocal import errors
    return a
'''
    tree = ast.parse(source)
    funcs = {n: (node, m) for n, node, m in _public_functions(tree)}
    assert function_problems(*funcs["f"]) == ["no type hint on a", "no return type hint",
                                              "no numpydoc Parameters section"]
    assert function_problems(*funcs["g"]) == []
    lazy = lazy_import_problems(tree, source.splitlines())
    assert len(lazy) == 1 and "line 4" in lazy[0]
