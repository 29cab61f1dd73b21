"""``smartcommunity db status`` and ``db retention`` against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from core.storage import StoragePath
from ingest.maintenance import maintain
from smartcommunity.cli import main
from tests.integration.test_storage import PATHS, Store, open_store, reading

pytestmark = pytest.mark.integration


@pytest.fixture(params=PATHS, ids=str)
def store(
    request: pytest.FixtureRequest, database_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    with open_store(request.param, database_server_url) as opened:
        monkeypatch.setenv("SC_DATABASE_URL", opened.url)
        yield opened


def test_status_names_the_path_and_its_parts(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"storage path: {store.path.value}\n")
    assert "retention: raw 400 days, hourly rollups 1100 days, daily rollups 3660 days" in out
    if store.path is StoragePath.POSTGRESQL:
        assert "0 rows waiting in readings_default" in out
    else:
        assert "policy_retention" in out
        assert "compression ratio" in out


def test_retention_refuses_unsafe_values_and_asks_before_dropping(
    store: Store, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device])
    store.write([reading(device, "spo2", datetime.now(UTC) - timedelta(days=40), 96.0)])
    if store.path is StoragePath.POSTGRESQL:
        with store.conn() as conn:
            maintain(conn)  # gives the late day its partition
    assert main(["db", "retention", "--raw", "30", "--hourly", "20"]) == 2
    assert "hourly rollups must be kept at least as long as raw readings" in capsys.readouterr().err
    assert main(["db", "retention", "--raw", "30"]) == 1
    assert "rerun with --yes" in capsys.readouterr().err
    assert store.rows("SELECT count(*) FROM readings") == [(1,)]
    assert main(["db", "retention", "--raw", "30", "--yes"]) == 0
    assert "retention: raw 30 days" in capsys.readouterr().out
    if store.path is StoragePath.TIMESCALEDB:
        with store.conn() as conn:
            for job in store.jobs(conn, "policy_retention"):
                conn.execute("CALL run_job(%s)", (job,))
    assert store.rows("SELECT count(*) FROM readings") == [(0,)]
    assert store.rows("SELECT raw_retention FROM storage_config") == [(timedelta(days=30),)]
