"""The layers of docs/design.md hold: every ``import`` in ``src/semifer`` (those inside functions
too) is read with ``ast`` and checked against the table below, so a lazy import cannot hide a
dependency that points upwards."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Single modules every layer may use; they import only each other (checkpoint uses io).
FOUNDATION = {"registry", "io", "checkpoint", "config", "weights"}

# Packages bottom to top, as drawn in docs/design.md. A package imports itself, FOUNDATION and
# the packages of lower layers, nothing else; packages of one layer never import each other
# (predict beside algorithms: prediction rebuilds a model from its weights, never needs training).
LAYERS = [
    ("data", "text"),
    ("models", "evaluation"),
    ("algorithms", "predict"),
    ("engine",),
    ("ssl", "analysis"),
    ("cli", ""),  # "": semifer/__init__.py, which loads Predictor lazily by name
]
RANK = {**{pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}, **{f: -1 for f in FOUNDATION}}


def may_import(own: str, target: str) -> bool:
    return target == own or target in FOUNDATION or (own not in FOUNDATION and RANK[target] < RANK[own])


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "semifer").rglob("*.py"))}


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def semifer_imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every semifer import of ``module``:
    ``import a.b``, ``from a import b`` (b resolved to the module a.b where it is one),
    relative imports, and ``importlib.import_module("a.b")`` with a literal name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub, None, node.lineno) if _is_module(sub) else (base, a.name, node.lineno))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, None, node.lineno))
    return [(m, n, line) for m, n, line in found if m == "semifer" or m.startswith("semifer.")]


def _package(module: str) -> str:
    """``semifer.engine.train`` -> ``engine``; ``semifer`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def test_every_package_is_placed_in_a_layer():
    assert {_package(m) for m in MODULES} <= set(RANK)


def test_the_rule_reads_as_drawn():
    assert may_import("predict", "models") and may_import("analysis", "predict") and may_import("models", "io")
    assert not may_import("predict", "algorithms") and not may_import("predict", "engine")
    assert not may_import("data", "models") and not may_import("models", "evaluation") and not may_import("io", "data")
    assert not may_import("ssl", "cli") and not may_import("text", "")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    own = _package(module)
    bad = [f"line {line}: {target}" for target, _, line in semifer_imports(module)
           if not may_import(own, _package(target))]
    allowed = sorted(p or "semifer" for p in RANK if may_import(own, p))
    assert not bad, f"{module} may import only {allowed}: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_from_another_module(module):
    bad = [f"line {line}: {target}.{name}" for target, name, line in semifer_imports(module)
           if target != module and name and name.startswith("_") and not name.startswith("__")]
    assert not bad, f"{module} imports private names of other modules; make them public: {bad}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The reader itself, on a module written for it: imports inside functions, a relative
    import, a name imported from a module, and importlib with a literal name."""
    pkg = tmp_path / "semifer" / "predict"
    pkg.mkdir(parents=True)
    (tmp_path / "semifer" / "__init__.py").write_text("")
    (tmp_path / "semifer" / "engine").mkdir()
    (tmp_path / "semifer" / "engine" / "__init__.py").write_text("")
    (tmp_path / "semifer" / "engine" / "train.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text(
        "import importlib\n"
        "def f():\n"
        "    from semifer.engine.train import _StopFlag\n"
        "    from ..engine import train\n"
        "    importlib.import_module('semifer.algorithms')\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setitem(MODULES, "semifer.predict.x", pkg / "x.py")
    assert semifer_imports("semifer.predict.x") == [
        ("semifer.engine.train", "_StopFlag", 3), ("semifer.engine.train", None, 4), ("semifer.algorithms", None, 5)]


def test_prediction_loads_neither_the_engine_nor_the_algorithms():
    """The import graph at run time agrees: ``semifer predict`` / ``export`` and the Predictor
    API load no training code."""
    code = ("import sys, semifer.predict, semifer.predict.cli, semifer.predict.export, semifer.predict.run\n"
            "print(sorted(m for m in sys.modules if m.startswith(('semifer.engine', 'semifer.algorithms'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
