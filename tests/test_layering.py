"""The import structure: no cycles and no upward imports, function-level imports included.

Layers, lowest first (a module may import its own layer and those below it):
  hw.errors / hw.validate / hw.yamlsrc / hw.files  (the error type, validation, YAML and
                                                   atomic-write helpers)
  hw.golden  (the numpy integer model)          sw  (PyTorch training, export)
  hw.rtl     (Amaranth blocks)
  hw.fpga    (FPGA flows, presets, board tops)
  sim        (cocotb benches: may import hw and sw)
  binbert    (the CLI and its commands: may import everything)
sw sits beside hw.rtl: it may import hw.golden and the base, nothing else of hw.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hw", "sw", "sim", "binbert")
BASE = ("hw", "hw.errors", "hw.validate", "hw.yamlsrc", "hw.files")
# layer -> the layers it may import (its own included)
ALLOWED = {
    "base": {"base"},
    "hw.golden": {"base", "hw.golden"},
    "hw.rtl": {"base", "hw.golden", "hw.rtl"},
    "hw.fpga": {"base", "hw.golden", "hw.rtl", "hw.fpga"},
    "sw": {"base", "hw.golden", "sw"},
    "sim": {"base", "hw.golden", "hw.rtl", "hw.fpga", "sw", "sim"},
    "binbert": {"base", "hw.golden", "hw.rtl", "hw.fpga", "sw", "sim", "binbert"},
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    for layer in ("hw.golden", "hw.rtl", "hw.fpga"):
        if module == layer or module.startswith(layer + "."):
            return layer
    top = module.split(".")[0]
    if top == "hw":
        raise AssertionError(f"{module}: a hw module outside golden/rtl/fpga and the base")
    return top


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, m, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def upward(g: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
            for m in sorted(g) for t in sorted(g[m]) if layer_of(t) not in ALLOWED[layer_of(m)]]


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_upward_imports():
    assert upward(graph()) == []


def test_checker_sees_cycles_and_upward_imports_in_function_bodies():
    g = {"hw.golden.a": {"hw.golden.b"}, "hw.golden.b": {"hw.golden.a"}, "hw.rtl.x": {"sim.y"},
         "sim.y": set()}
    assert cycles(g) == [["hw.golden.a", "hw.golden.b"]]
    assert upward(g) == ["hw.rtl.x (hw.rtl) imports sim.y (sim)"]


def test_function_level_imports_are_counted(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from sim.runner import run_block\n    import hw.golden.arith\n")
    assert imports_of(f, "hw.rtl.m", {"sim.runner", "hw.golden.arith", "hw.rtl.m"}) == {
        "sim.runner", "hw.golden.arith"}


@pytest.mark.parametrize("module", ["hw.fpga.flow", "hw.golden.arith", "sw.export"])
def test_layers_are_known(module):
    assert module in graph()
