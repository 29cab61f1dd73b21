"""Holds the import directions of docs/architecture.md ("The rule the test holds")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "core",
    "store",
    "gateway",
    "ingest",
    "alerts",
    "api",
    "simulators",
    "smartcommunity",
    "bench",
    "firebridge",
)
# What each package may import from the project. `smartcommunity` is the launcher
# (CLI, demo): the composition root, the one place that wires everything. `bench`
# drives the whole platform as a user would, so it may import any of it but the
# HTTP routes (BENCH_FORBIDDEN). `simulators` registers devices and runs
# migrations for `simulate --register`, hence `store`.
ALLOWED = {
    "core": {"core"},
    "store": {"core", "store"},
    "ingest": {"core", "store", "ingest"},
    "alerts": {"core", "store", "alerts"},
    "gateway": {"core", "store", "gateway", "ingest", "alerts"},
    "api": {"core", "store", "api"},
    "simulators": {"core", "store", "simulators"},
    # The fire-panel bridge speaks to the pipeline only through the broker and the
    # stored rows: it imports no other package's internals.
    "firebridge": {"core", "store", "firebridge"},
    "smartcommunity": set(PACKAGES) - {"bench"},
    "bench": set(PACKAGES),
}
# core has no I/O of its own: no network or database clients (SQL goes in `store`).
CORE_FORBIDDEN = {
    "paho",
    "socket",
    "requests",
    "httpx",
    "fastapi",
    "uvicorn",
    "subprocess",
    "psycopg",
    "psycopg_pool",
}
# A benchmark measures the platform through its services and stores, never by
# calling an HTTP route's function.
BENCH_FORBIDDEN = "api.routes"
# store returns plain records (dataclasses, core models), never API models: it knows no
# web framework.
STORE_FORBIDDEN = {"fastapi", "starlette"}
# The launcher's modules that may import `api` at all, and what of it: the entry point
# that serves the app and the demo that runs it.
API_IMPORTERS = {"smartcommunity/cli.py": {"api.app"}, "smartcommunity/demo.py": {"api.app"}}
# CLI commands still calling route modules (none left: the list may only shrink).
COMMAND_API_REMAINDER: dict[str, set[str]] = {}
# Where SQL may not be written: every package but store/ and the benchmarks. The HTTP
# side and the CLI commands read and write through store/ (none holds SQL of its own any more).
SQL_FREE_ROOTS = tuple(p for p in PACKAGES if p not in {"store", "bench"})
# Production modules outside store/ that hold SQL, and why.
SQL_OUTSIDE_STORE = {
    # The hot path's batch: COPY into staging and one merge call, beside the code that
    # builds and bisects the batch.
    "ingest/writer.py",
    # `select 1` until the embedded PostgreSQL answers.
    "smartcommunity/embedded/postgres.py",
    # The cluster tests' rig reads the workers' figures as a test would.
    "smartcommunity/cluster_rig.py",
}
# A statement in a string constant: what a query or a change of the database starts with.
_SQL_TEXT = re.compile(
    r"\b(SELECT\b[\s\S]*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|LISTEN|NOTIFY)\b"
)
# Calls that send SQL (a psycopg connection's or cursor's).
_SQL_CALLS = {"execute", "executemany", "copy"}


def modules_of(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name (``from a import b``
    names ``a.b`` too: b may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    """The top-level packages ``path`` imports."""
    return {name.split(".")[0] for name in modules_of(path)}


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


# Where the environment may be read: the entry points that build the process's one
# Settings, and what hands its own environment to child processes (the embedded
# broker; the RabbitMQ nodes and workers of the cluster tests and benchmark).
ENVIRONMENT_READERS = {
    "smartcommunity/cli.py",
    "api/app.py",
    "firebridge/__main__.py",
    "smartcommunity/embedded/broker.py",
    "smartcommunity/rabbit_cluster.py",
    "smartcommunity/cluster_rig.py",
}


def environment_reads(path: Path) -> list[str]:
    """``Settings()`` built, ``os.environ`` or ``os.getenv`` read in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Settings"
        ):
            found.append((node.lineno, "Settings()"))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in {"environ", "environb", "getenv"}
        ):
            found.append((node.lineno, f"os.{node.attr}"))
    return [f"{what} at line {line}" for line, what in sorted(found)]


def test_only_entry_points_read_the_environment() -> None:
    for package in PACKAGES:
        if package == "bench":  # each benchmark script is an entry point of its own
            continue
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if name in ENVIRONMENT_READERS:
                continue
            assert not environment_reads(path), f"{name}: {environment_reads(path)}"


def sql_in(path: Path) -> list[str]:
    """SQL written in ``path``: statements in string constants (docstrings aside), queries
    composed with ``psycopg.sql``, and calls that send SQL."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and _SQL_TEXT.search(node.value):
                found.append((node.lineno, node.value.strip()[:40]))
        elif isinstance(node, ast.ImportFrom) and node.module == "psycopg":
            if any(alias.name == "sql" for alias in node.names):
                found.append((node.lineno, "from psycopg import sql"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SQL_CALLS
        ):
            found.append((node.lineno, f".{node.func.attr}()"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_store_returns_no_api_models() -> None:
    for path in (ROOT / "store").rglob("*.py"):
        bad = imports_of(path) & STORE_FORBIDDEN
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_launcher_imports_only_the_app_of_api() -> None:
    """CLI commands use store/ and core; only the entry points start the app."""
    for path in (ROOT / "smartcommunity").rglob("*.py"):
        name = str(path.relative_to(ROOT))
        api = {m for m in modules_of(path) if m == "api" or m.startswith("api.")}
        allowed = API_IMPORTERS.get(name, set()) | COMMAND_API_REMAINDER.get(name, set())
        bad = {m for m in api if not any(m == a or m.startswith(a + ".") for a in allowed)}
        assert not bad, f"{name} imports {sorted(bad)}: use store/ (and core)"


def test_the_command_remainder_only_shrinks() -> None:
    for name, modules in COMMAND_API_REMAINDER.items():
        imported = modules_of(ROOT / name) if (ROOT / name).exists() else set()
        stale = modules - imported
        assert not stale, f"{name} no longer imports {sorted(stale)}: drop it from the list"


def test_the_sql_outside_store_is_still_there() -> None:
    """The exceptions are real: an entry whose module lost its SQL must go."""
    for name in sorted(SQL_OUTSIDE_STORE):
        assert sql_in(ROOT / name), f"{name} has no SQL left: drop it from the list"


def test_sql_lives_in_store() -> None:
    for root in SQL_FREE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if name in SQL_OUTSIDE_STORE:
                continue
            found = sql_in(path)
            assert not found, f"{name} writes SQL (it belongs in store/): {found[:3]}"


def test_bench_calls_no_route() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        routes = {m for m in modules_of(path) if m.startswith(BENCH_FORBIDDEN)}
        assert not routes, f"{path.relative_to(ROOT)} imports {sorted(routes)}"


def test_commands_call_no_route() -> None:
    """The CLI reads and writes through `store`, not through HTTP route modules."""
    for path in (ROOT / "smartcommunity" / "commands").rglob("*.py"):
        routes = {m for m in modules_of(path) if m.startswith("api.routes")}
        assert not routes, f"{path.relative_to(ROOT)} imports {sorted(routes)}"


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text(
        "from api.app import create_app\nimport gateway.bridge\nfrom api.routes import reports\n"
        "import psycopg\n"
    )
    assert imports_of(bad) == {"api", "gateway", "psycopg"}
    assert "api.routes.reports" in modules_of(bad)
    assert imports_of(bad) & CORE_FORBIDDEN == {"psycopg"}
    queries = tmp_path / "q.py"
    queries.write_text(
        '"""SELECT x FROM y in a docstring is prose."""\n'
        "from psycopg import sql\n"
        'Q = "SELECT id" " FROM devices"\n'
        "def f(conn):\n    conn.execute(Q)\n"
        'W = "UPDATE devices SET x = 1"\n'
    )
    assert sql_in(queries) == [
        "line 2: from psycopg import sql",
        "line 3: SELECT id FROM devices",
        "line 5: .execute()",
        "line 6: UPDATE devices SET x = 1",
    ]
    reads = tmp_path / "r.py"
    reads.write_text("import os\nurl = os.environ.get('X')\ns = Settings()\n")
    assert environment_reads(reads) == ["os.environ at line 2", "Settings() at line 3"]
