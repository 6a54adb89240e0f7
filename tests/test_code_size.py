"""Short modules and functions (issue 19's rule): none over 350 lines, no function over 60 lines.

CLI argument tables (`build_parser`, `parse_args`, `add_arguments`) are exempt: they are flat lists.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("tpu_grapheme", "tune", "benchmarks")
MAX_MODULE, MAX_FUNCTION = 350, 60
CLI_TABLES = {"build_parser", "parse_args", "add_arguments"}


def _modules() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_there_are_modules_to_check():
    assert len(_modules()) > 50


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_lengths(path: pathlib.Path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE, f"{path.name}: {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name not in CLI_TABLES
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION
    ]
    assert not long, f"{path.name}: {', '.join(long)}"
