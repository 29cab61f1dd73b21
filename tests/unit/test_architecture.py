"""Holds the import directions of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "core",
    "gateway",
    "ingest",
    "alerts",
    "api",
    "simulators",
    "smartcommunity",
    "firebridge",
)
# What each package may import from the project. `smartcommunity` is the launcher
# (CLI, demo): the composition root, the one place that wires everything.
ALLOWED = {
    "core": {"core"},
    "ingest": {"core", "ingest"},
    "alerts": {"core", "alerts"},
    "gateway": {"core", "gateway", "ingest", "alerts"},
    "api": {"core", "api"},
    "simulators": {"core", "simulators"},
    # The fire-panel bridge speaks to the pipeline only through the broker and the
    # stored rows: it imports no other package's internals.
    "firebridge": {"core", "firebridge"},
    "smartcommunity": set(PACKAGES),
}
# core has no I/O of its own: no network or database clients.
CORE_FORBIDDEN = {"paho", "socket", "requests", "httpx", "fastapi", "uvicorn", "subprocess"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_import_directions(package: str) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        project = imports_of(path) & set(PACKAGES)
        illegal = project - ALLOWED[package]
        assert not illegal, f"{path.relative_to(ROOT)} imports {sorted(illegal)}"


def test_core_does_no_network_io() -> None:
    for path in (ROOT / "core").rglob("*.py"):
        bad = imports_of(path) & CORE_FORBIDDEN
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from api.app import create_app\nimport gateway.bridge\n")
    assert imports_of(bad) == {"api", "gateway"}
