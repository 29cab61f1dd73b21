"""Every table has one module that writes it, and docs/architecture.md names it.

The statements are found in the modules' string constants (INSERT, UPDATE, DELETE,
COPY into a table the migrations create); the table "Where each table is written"
of docs/architecture.md is read for the module it names first in each row. The
hot path's one transaction per batch (``ingest/writer.py``) also moves a device's
last-seen and status and notes the hours it wrote into: those two are the
exceptions it states, and are held here too.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict

from tests.unit.test_architecture import ROOT, SQL_FREE_ROOTS

# Code that runs in production; tests and benchmarks build their own fixtures.
SOURCES = ("store", *SQL_FREE_ROOTS)
DOC = ROOT / "docs" / "architecture.md"
# Besides a table's owner, the hot path writes these in the batch's transaction.
HOT_PATH = {"devices": "ingest/writer.py", "rollup_dirty": "ingest/writer.py"}

_CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|DELETE\s+FROM|COPY|TRUNCATE(?:\s+TABLE)?)\s+(\w+)"
    r"|\bUPDATE\s+(\w+)(?:\s+(?:AS\s+)?\w+)?\s+SET\b",
    re.IGNORECASE,
)
_ROW = re.compile(r"^\|\s*(`[a-z_]+`(?:,\s*`[a-z_]+`)*)\s*\|(.*)\|\s*$")


def tables() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "core" / "migrations").glob("*.sql"):
        found.update(name.lower() for name in _CREATE.findall(path.read_text(encoding="utf-8")))
    return found


def documented_owners() -> dict[str, str]:
    """Each table's first-named module in the doc's table (its one writer)."""
    owners: dict[str, str] = {}
    section = DOC.read_text(encoding="utf-8").split("## Where each table is written", 1)[1]
    for line in section.split("\n## ", 1)[0].splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        modules = re.findall(r"`([\w/]+\.py)`", match.group(2))
        for table in re.findall(r"`([a-z_]+)`", match.group(1)):
            owners[table] = modules[0] if modules else ""
    return owners


def writers(known: set[str]) -> dict[str, set[str]]:
    """Table -> the modules whose string constants write it."""
    found: dict[str, set[str]] = defaultdict(set)
    for root in SOURCES:
        for path in (ROOT / root).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=name)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Constant) or not isinstance(node.value, str | bytes):
                    continue
                text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
                for match in _WRITE.finditer(text):
                    table = (match.group(1) or match.group(2)).lower()
                    if table in known:
                        found[table].add(name)
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scan is not vacuous: the writer's batch and the registry are seen writing."""
    found = writers(tables())
    assert "ingest/writer.py" in found["latest"]
    assert "store/devices.py" in found["devices"]
    assert "store/alerts.py" in found["alert_history"]


def test_every_written_table_is_documented() -> None:
    owners = documented_owners()
    missing = sorted(set(writers(tables())) - set(owners))
    assert not missing, f"tables written but not in docs/architecture.md: {missing}"


def test_every_table_has_one_writer() -> None:
    owners = documented_owners()
    wrong: list[str] = []
    for table, modules in sorted(writers(tables()).items()):
        expected = {owners.get(table, "?")}
        if table in HOT_PATH:
            expected.add(HOT_PATH[table])
        if modules - expected:
            wrong.append(f"{table}: written by {sorted(modules)}, owner {sorted(expected)}")
    assert not wrong, "\n".join(wrong)
