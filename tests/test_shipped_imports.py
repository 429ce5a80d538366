"""Test support stays out of the installed packages: no shipped module imports ``tests``, and the ML
backend does not import the local stack runner (it once did, only for test helpers)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shipped_packages() -> list[str]:
    """The top-level packages pyproject.toml installs (``include = ["combined_coco*", ...]``)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]


def imported_top_levels(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``, wherever they are (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", shipped_packages())
def test_no_shipped_module_imports_tests(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    offenders = [str(f.relative_to(REPO)) for f in files if "tests" in imported_top_levels(f)]
    assert offenders == []


def test_backend_does_not_import_stack() -> None:
    offenders = [
        str(f.relative_to(REPO)) for f in sorted((REPO / "backend").rglob("*.py")) if "stack" in imported_top_levels(f)
    ]
    assert offenders == []
