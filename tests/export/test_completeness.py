"""Every registered encoder adapter has a parity test: a test function marked ``@pytest.mark.parity("<name>")``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hiprune.export.adapters import ADAPTERS

TESTS = Path(__file__).parents[1]


def _parity_families() -> dict[str, list[str]]:
    """family → the test functions marked for it, read from the test sources (nothing imported or run)."""
    found: dict[str, list[str]] = {}
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            for mark in node.decorator_list:
                if _is_parity_mark(mark):
                    family = mark.args[0].value  # type: ignore[attr-defined]
                    found.setdefault(family, []).append(f"{path.relative_to(TESTS)}::{node.name}")
    return found


def _is_parity_mark(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) == "pytest.mark.parity"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
    )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_registered_adapter_has_a_parity_test(adapter):
    assert adapter.name in _parity_families(), (
        f"adapter {adapter.name!r} has no parity test; mark one with @pytest.mark.parity({adapter.name!r})"
    )


def test_parity_marks_name_registered_adapters():
    names = {a.name for a in ADAPTERS}
    assert set(_parity_families()) <= names
