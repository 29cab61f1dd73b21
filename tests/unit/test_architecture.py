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


def test_bench_calls_no_route() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        routes = {m for m in modules_of(path) if m.startswith(BENCH_FORBIDDEN)}
        assert not routes, f"{path.relative_to(ROOT)} imports {sorted(routes)}"


# Modules whose SQL has moved to `store/`: they run no statement and hold no SQL text.
# (The registry routes and api/dashboard/overview.py's device list follow with the
# store.devices/places/residents/accounts move.)
SQL_FREE = (
    "api/alert_hub.py",
    "api/routes/alerts.py",
    "api/routes/audit.py",
    "api/routes/dashboard_api.py",
    "api/routes/dead_letters.py",
    "api/routes/incidents.py",
    "api/routes/ops.py",
    "api/routes/readings.py",
    "api/routes/reports.py",
    "api/routes/rules.py",
    "api/routes/visits.py",
    "alerts/notify.py",
    "alerts/service.py",
    "alerts/store.py",
    "alerts/visit_check.py",
    "gateway/service.py",
    "gateway/shard_alerts.py",
    "smartcommunity/commands/dead_letters.py",
    "smartcommunity/commands/report.py",
    "smartcommunity/commands/rules.py",
)
# A statement's opening words, as SQL is written here (upper case).
_SQL_TEXT = re.compile(
    r"\b(SELECT\s|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|LISTEN\s|NOTIFY\b"
    r"|pg_notify\()"
)
# Calls that run a statement, and the module that builds statements.
_RUNS_SQL = {"execute", "executemany", "copy", "stream"}


def sql_in(path: Path) -> list[str]:
    """Statements run (``.execute(...)`` and kin), ``psycopg.sql`` imported, or SQL text in
    a string literal (docstrings aside) in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _RUNS_SQL
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}(...)")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _SQL_TEXT.search(node.value)
        ):
            found.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
    found += [f"imports {m}" for m in modules_of(path) if m.startswith("psycopg.sql")]
    return found


@pytest.mark.parametrize("name", SQL_FREE)
def test_sql_lives_in_store(name: str) -> None:
    assert not sql_in(ROOT / name), f"{name}: {sql_in(ROOT / name)}"


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
    reads = tmp_path / "r.py"
    reads.write_text("import os\nurl = os.environ.get('X')\ns = Settings()\n")
    assert environment_reads(reads) == ["os.environ at line 2", "Settings() at line 3"]
    route = tmp_path / "route.py"
    route.write_text(
        '"""Reads SELECT-ed rows."""\nfrom psycopg import sql\n'
        "def f(conn):\n    '''INSERT INTO nothing: a docstring.'''\n"
        "    q = 'SELECT id FROM alerts'\n    conn.execute(q)\n"
        "    return 'DELETE FROM x', \"UPDATE alerts SET state = 'open'\", 'no sql here'\n"
    )
    assert sql_in(route) == [
        "line 5: SQL text 'SELECT id FROM alerts'",
        "line 6: .execute(...)",
        "line 7: SQL text 'DELETE FROM x'",
        "line 7: SQL text \"UPDATE alerts SET state = 'open'\"",
        "imports psycopg.sql",
    ]
