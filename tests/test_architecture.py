"""Layering rules the code keeps: a fast torch-free CLI entry, targets independent of each other, and the
graph I/O names spelled only in hiprune/contract.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hiprune.contract import INPUT_NAMES, OUTPUT_NAMES
from hiprune.targets import TARGETS

PACKAGE = Path(__file__).resolve().parents[1] / "hiprune"
HEAVY = ("torch", "transformers", "onnx", "onnx_ir", "onnxscript", "onnxruntime", "coremltools", "tensorrt")


def _module_path(module: str) -> Path:
    return PACKAGE.parent / (module.replace(".", "/") + ".py")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["build-engine", "--help"]])
def test_cli_answers_without_heavy_imports(args):
    code = (
        "import sys\n"
        "from hiprune.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True)
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == "[]", f"{args} imported {loaded}"


def test_targets_never_import_each_other():
    target_modules = {spec.partition(":")[0] for spec in TARGETS.values()}
    for module in target_modules:
        others = _imports(_module_path(module)) & (target_modules - {module})
        assert not others, f"{module} imports {others}; share code through hiprune.targets.spine instead"


def test_io_names_are_spelled_only_in_the_contract():
    every = (*INPUT_NAMES, *OUTPUT_NAMES)
    # a name as a whole string or as `name:`; names with an underscore anywhere ("indices" is also a word)
    joined, unusual = "|".join(every), "|".join(n for n in every if "_" in n)
    names = re.compile(rf"^({joined})$|\b({joined}):|\b({unusual})\b")
    allowed = {PACKAGE / "contract.py", PACKAGE / "graphs" / "select_op.py"}  # the op's own parameter name
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
        }
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and id(node) not in docstrings and names.search(node.value):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not found, "graph I/O names outside hiprune/contract.py:\n" + "\n".join(found)
