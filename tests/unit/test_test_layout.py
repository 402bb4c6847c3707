"""Test modules hold tests; what several of them share lives in tests/fixtures/ (issue 18:
a test module imported by others runs its tests' module-level set-up for them, and moving or
renaming one broke its importers)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_module_imports_a_test_module() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if any(part.startswith("test_") for part in name.split(".")[1:]):
                    offenders.append(f"{path.relative_to(TESTS)}: {name}")
    assert len(list(TESTS.rglob("test_*.py"))) > 50  # the walk sees the suite
    assert offenders == []
