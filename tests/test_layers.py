"""Imports point down: the generic packages (state, runtime) never import a stage, the core imports nothing of ours.

Read from the source with ast, so a lazy import inside a function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "consumer"
STAGES = ("consumer.delivery", "consumer.ingest", "consumer.quarantine", "consumer.web", "consumer.cli")
FORBIDDEN = {
    "consumer.core": ("consumer.",),  # pure: imports nothing of ours but itself
    "consumer.state": (*STAGES, "consumer.core", "consumer.runtime"),
    "consumer.runtime": (*STAGES, "consumer.core"),
}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_generic_packages_never_import_a_stage(package: str) -> None:
    folder = PACKAGE / package.split(".")[1]
    wrong = {
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in folder.rglob("*.py")
        for name in imports_of(path)
        if name.startswith(FORBIDDEN[package]) and not name.startswith(package)
    }
    assert not wrong, f"{package} imports what it must not: {sorted(wrong)}"
