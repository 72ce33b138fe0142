"""The package's shape: short functions, narrow signatures, imports down the data flow.

Run as a script (``python tests/test_code_shape.py``) to print the ten longest
functions and the widest signatures.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xtl"
MAX_LINES = 80
MAX_PARAMETERS = 8

#: Where each module sits in the data flow: a module may import modules of its
#: own rank or lower, never higher (``xtl`` itself, the facade, is the top).
RANKS = {
    "xtl._version": 0, "xtl._progress": 0, "xtl.options": 0, "xtl.physics.fourier": 0,
    "xtl.data.cf": 1, "xtl.data.files": 1, "xtl.data.netcdf": 1.1, "xtl.data.stream": 1.2,
    "xtl.physics.cases": 1,
    # scheduler connections: below the ensembles (2.2) that connect through it
    "xtl.scheduler": 1.5,
    "xtl.solver.options": 2.0, "xtl.solver.grid": 2.0, "xtl.solver.equations": 2.0, "xtl.solver.run": 2.1,
    "xtl.solver.ensemble": 2.2, "xtl.solver": 2.3,
    "xtl.data.coarse": 1.8, "xtl.data.spectra": 4, "xtl.explain.kernels": 4.5, "xtl.accessors": 5, "xtl.data.metrics": 5,
    "xtl.nn.spec": 5.7, "xtl.nn.dataset": 5.8, "xtl.nn.importing": 5.85,
    "xtl.nn.backends.loop": 5.9, "xtl.nn.backends.prefix": 5.95, "xtl.nn.backends.base": 6.0,
    # a Model saves itself through files.py, which builds on model.py: one rank
    "xtl.nn.model": 6.1, "xtl.nn.files": 6.1, "xtl.nn.backends.keras": 6.2,
    "xtl.nn.backends.torch": 6.2, "xtl.nn.importers": 6.4,
    "xtl.nn.backends": 6.3,
    "xtl.nn.training": 7, "xtl.nn.sweep": 8, "xtl.explain.activations": 8, "xtl.explain.recommend": 9,
    "xtl.explain.benchmark": 9.5,
    "xtl.physics.closures": 1, "xtl.solver.les": 2.2, "xtl.nn.closure": 6.5,
    "xtl.experiment.aposteriori": 10,
    "xtl.experiment.plotting": 11, "xtl.experiment.document": 11.5,
    "xtl.experiment.findings": 11.8, "xtl.experiment.report": 12, "xtl.experiment.config": 12, "xtl.experiment.estimate": 12.5,
    "xtl.experiment.workspace": 12.8, "xtl.experiment.stages": 13, "xtl.cli": 14, "xtl": 15,
    # the rooms' own package modules (docstrings only)
    "xtl.physics": 1, "xtl.data": 5, "xtl.nn": 8, "xtl.explain": 10, "xtl.experiment": 13,
}


def modules():
    """``(module name, path, tree)`` of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text())


def functions():
    """``(where, lines of code, parameters)`` of every function and method."""
    for name, path, tree in modules():
        source = path.read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
                yield where, code_lines(node, source), parameters(node)


def code_lines(node, source) -> int:
    """Lines of a function's body that hold code (no docstring, comments, blanks)."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                    ast.Constant):
        body = body[1:]
    lines = {n for stmt in body for n in range(stmt.lineno, stmt.end_lineno + 1)
             if source[n - 1].strip() and not source[n - 1].strip().startswith("#")}
    return len(lines)


def parameters(node) -> list:
    """A function's parameters, without ``self``/``cls`` and one options object.

    ``*args`` and ``**kwargs`` count as one each; a parameter named ``options``
    (an options object of :mod:`xtl.options`) is not counted.
    """
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names = [n for n in names if n not in ("self", "cls", "options")]
    if a.vararg:
        names.append(f"*{a.vararg.arg}")
    if a.kwarg:
        names.append(f"**{a.kwarg.arg}")
    return names


def imports():
    """``(importer, imported module, imported names)`` of every relative import.

    Inside functions too: a lazy import is still an arrow in the data flow.
    """
    for name, path, tree in modules():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                if node.module is None:  # from . import module_or_name, ...
                    for alias in node.names:
                        sub = f"{base}.{alias.name}"
                        yield (name, sub, []) if sub in RANKS else (name, base, [alias.name])
                else:
                    yield name, f"{base}.{node.module}", [a.name for a in node.names]


def test_no_function_is_longer_than_80_lines():
    long = [f"{w} ({n} lines)" for w, n, _ in functions() if n > MAX_LINES]
    assert not long, long


def test_no_signature_is_wider_than_8_parameters():
    wide = [f"{w} ({len(p)}: {', '.join(p)})" for w, _, p in functions() if len(p) > MAX_PARAMETERS]
    assert not wide, wide


def test_no_private_name_is_imported_from_another_module():
    private = [f"{who} imports {name} from {target}" for who, target, names in imports()
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, private


def test_every_module_has_a_rank():
    assert sorted(set(name for name, _, _ in modules()) - set(RANKS)) == []


def test_no_import_runs_up_the_data_flow():
    upward = []
    for who, target, names in imports():
        if target in RANKS and RANKS[target] > RANKS[who]:
            upward.append(f"{who} imports {target}")
    assert not upward, upward


@pytest.mark.parametrize("source, expected", [
    ("def f(a, b, *c, options=None, **d):\n    return 1\n", ["a", "b", "*c", "**d"]),
    ("class A:\n    def f(self, x):\n        pass\n", ["x"]),
])
def test_parameters_counts_what_it_says(source, expected):
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
    assert parameters(node) == expected


def test_code_lines_skip_docstring_comments_and_blanks():
    source = 'def f():\n    """Doc\n    string."""\n    # comment\n\n    x = (1,\n         2)\n    return x\n'
    node = ast.parse(source).body[0]
    assert code_lines(node, source.splitlines()) == 3


def main(out=sys.stdout):
    rows = list(functions())
    print("ten longest functions (lines of code, docstrings and comments excluded):", file=out)
    for where, n, _ in sorted(rows, key=lambda r: -r[1])[:10]:
        print(f"  {n:4d}  {where}", file=out)
    print("ten widest signatures (parameters, self and one options object excluded):", file=out)
    for where, _, p in sorted(rows, key=lambda r: -len(r[2]))[:10]:
        print(f"  {len(p):4d}  {where}", file=out)
    print(f"functions: {len(rows)}; over {MAX_LINES} lines: "
          f"{sum(r[1] > MAX_LINES for r in rows)}; over {MAX_PARAMETERS} parameters: "
          f"{sum(len(r[2]) > MAX_PARAMETERS for r in rows)}", file=out)


if __name__ == "__main__":
    main()
