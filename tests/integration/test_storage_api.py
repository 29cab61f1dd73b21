"""The time-series API over both storage paths (see test_storage.py for the fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import ApiSettings, Settings
from store.accounts import create_token
from tests.integration.test_storage import NEW_YORK, PATHS, SHANGHAI, Store, open_store, reading

pytestmark = pytest.mark.integration

MAX_PAGE = 7


@pytest.fixture(params=PATHS, ids=str)
def store(request: pytest.FixtureRequest, database_server_url: str) -> Iterator[Store]:
    with open_store(request.param, database_server_url) as opened:
        yield opened


@pytest.fixture
def api(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(database_url=store.url, api=ApiSettings(max_page_size=MAX_PAGE))
    with TestClient(create_app(settings)) as client, store.conn() as conn:
        token = create_token(conn, "storage tests")
        yield client, {"Authorization": f"Bearer {token}"}


def get(api: tuple[TestClient, dict[str, str]], url: str, **params: Any) -> Any:
    client, auth = api
    response = client.get(url, params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def pages(
    api: tuple[TestClient, dict[str, str]], url: str, after: str | None = None, **params: Any
) -> list[Any]:
    """Every row of every page from ``after`` on, following next_cursor."""
    rows: list[Any] = []
    while True:
        page = get(api, url, **params, **({"after": after} if after else {}))
        assert len(page["data"]) <= MAX_PAGE
        rows += page["data"]
        after = page["next_cursor"]
        if after is None:
            return rows


def test_buckets_from_rollups_and_raw_agree(
    store: Store, api: tuple[TestClient, dict[str, str]], unique_id: str
) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device])
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    values = [(start + timedelta(minutes=7 * i), float(i % 50)) for i in range(30 * 60 // 7)]
    store.write([reading(device, "heart_rate", ts, v) for ts, v in values])
    store.refresh()
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=30)).isoformat()}
    url = f"/api/v1/devices/{device}/aggregates"
    hourly = pages(api, url, metric="heart_rate", bucket="1h", agg="avg", **window)
    assert len(hourly) == 30
    minutes = pages(api, url, metric="heart_rate", bucket="1m", agg="max", **window)
    assert len(minutes) == len(values)
    for bucket in hourly:
        lo = datetime.fromisoformat(bucket["bucket"])
        inside = [v for ts, v in values if lo <= ts < lo + timedelta(hours=1)]
        assert bucket["count"] == len(inside)
        assert bucket["value"] == pytest.approx(sum(inside) / len(inside))
    last = get(api, url, metric="heart_rate", bucket="1h", agg="last", **window)
    assert last["source"] == "readings_1h"
    assert (
        last["data"][0]["value"] == [v for ts, v in values if ts < start + timedelta(hours=1)][-1]
    )


@pytest.mark.parametrize("zone", [SHANGHAI, NEW_YORK])
def test_daily_buckets_are_local_days(
    store: Store, api: tuple[TestClient, dict[str, str]], unique_id: str, zone: str
) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device], zone)
    tz = ZoneInfo(zone)
    day = (datetime.now(tz) - timedelta(days=4)).date()
    late_evening = datetime(day.year, day.month, day.day, 23, 30, tzinfo=tz)
    store.write(
        [
            reading(device, "steps", late_evening, 100.0),
            reading(device, "steps", late_evening + timedelta(hours=1), 7.0),
        ]
    )
    store.refresh()
    got = get(
        api,
        f"/api/v1/devices/{device}/aggregates",
        metric="steps",
        bucket="1d",
        agg="max",
        start=(late_evening - timedelta(days=1)).isoformat(),
        end=(late_evening + timedelta(days=2)).isoformat(),
    )
    assert got["time_zone"] == zone
    assert [(datetime.fromisoformat(b["bucket"]), b["value"]) for b in got["data"]] == [
        (datetime(day.year, day.month, day.day, tzinfo=tz), 100.0),
        (datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(days=1), 7.0),
    ]


def _wearables(store: Store, unique_id: str, size: int) -> tuple[str, list[str]]:
    """Community ``c<unique_id>`` with ``size`` wearables ``w<unique_id>-0`` and on."""
    community, devices = f"c{unique_id}", [f"w{unique_id}-{n}" for n in range(size)]
    store.register(community, devices)
    return community, devices


def test_community_pages_are_stable_while_rows_arrive(
    store: Store, api: tuple[TestClient, dict[str, str]], unique_id: str
) -> None:
    community, devices = _wearables(store, unique_id, 3)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    store.write(
        [
            reading(d, "spo2", base + timedelta(minutes=m), 90.0 + m)
            for d in devices
            for m in range(8)
        ]
    )
    url = f"/api/v1/communities/{community}/readings"
    window = {
        "metric": "spo2",
        "start": base.isoformat(),
        "end": (base + timedelta(hours=1)).isoformat(),
    }
    first = get(api, url, **window)
    # Rows arriving between pages, before and after the cursor, neither repeat nor
    # shift what the next pages return.
    store.write([reading(devices[0], "spo2", base + timedelta(seconds=30), 1.0)])
    store.write([reading(devices[1], "spo2", base + timedelta(minutes=50), 2.0)])
    rest = pages(api, url, **window, after=first["next_cursor"])
    keys = [(r["ts"], r["device_id"]) for r in first["data"] + rest]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys)) == 3 * 8 + 1  # the row after the cursor, not the one before

    buckets = pages(
        api, f"/api/v1/communities/{community}/aggregates", metric="spo2", bucket="1m", agg="count",
        start=base.isoformat(), end=(base + timedelta(minutes=8)).isoformat(),
    )  # fmt: skip
    assert [(b["device_id"], b["value"]) for b in buckets[:4]] == [
        (devices[0], 2.0), (devices[1], 1.0), (devices[2], 1.0), (devices[0], 1.0),
    ]  # fmt: skip
    assert len(buckets) == 3 * 8


def test_latest_values_of_a_community(
    store: Store, api: tuple[TestClient, dict[str, str]], unique_id: str
) -> None:
    community, devices = _wearables(store, unique_id, 4)
    store.register(f"other{unique_id}", [f"x{unique_id}"])
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        reading(d, m, now - timedelta(minutes=5), 1.0) for d in devices for m in ("spo2", "steps")
    ]
    rows += [reading(d, "spo2", now - timedelta(minutes=1), 2.0) for d in devices]
    rows += [reading(f"x{unique_id}", "spo2", now, 3.0)]
    store.write(rows)
    store.write([reading(devices[0], "spo2", now - timedelta(hours=1), 0.5)])  # late: ignored
    got = pages(api, f"/api/v1/communities/{community}/latest")
    assert [(r["device_id"], r["metric"], r["value"]) for r in got] == [
        (d, m, 2.0 if m == "spo2" else 1.0) for d in devices for m in ("spo2", "steps")
    ]
    only = pages(api, f"/api/v1/communities/{community}/latest", metric="steps")
    assert {r["metric"] for r in only} == {"steps"}
    assert len(only) == 4


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/devices/{d}/aggregates", {"metric": "altitude"}, 422, "unknown metric 'altitude'"),
        ("/devices/{d}/aggregates", {"metric": "spo2", "bucket": "5m"}, 422, "Input should be"),
        ("/devices/{d}/aggregates", {"metric": "spo2", "agg": "median"}, 422, "Input should be"),
        ("/devices/{d}/aggregates", {}, 422, "Field required"),
        (
            "/devices/{d}/aggregates",
            {"metric": "spo2", "bucket": "1m", "start": "2026-01-01T00:00:00Z",
             "end": "2026-03-01T00:00:00Z"},
            422, "the range may span at most 31 days",
        ),
        (
            "/devices/{d}/aggregates",
            {"metric": "spo2", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            422, "end must be after start",
        ),
        ("/devices/{d}/aggregates", {"metric": "spo2", "after": "junk"}, 422, "invalid cursor"),
        ("/devices/{d}/readings", {"metric": "altitude"}, 422, "unknown metric 'altitude'"),
        ("/communities/{c}/readings", {"metric": "nope"}, 422, "unknown metric 'nope'"),
        (
            "/communities/{c}/readings",
            {"metric": "spo2", "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"},
            422, "the range may span at most 1 days",
        ),
        ("/communities/{c}/latest", {"after": "eyJ4Ijox"}, 422, "invalid cursor"),
        ("/communities/ghost/latest", {}, 404, "no community 'ghost'"),
        ("/devices/ghost/aggregates", {"metric": "spo2"}, 404, "no device 'ghost'"),
    ],
)  # fmt: skip
def test_clear_errors(
    store: Store,
    api: tuple[TestClient, dict[str, str]],
    unique_id: str,
    path: str,
    params: dict[str, str],
    status: int,
    message: str,
) -> None:
    device, community = f"w{unique_id}", f"c{unique_id}"
    store.register(community, [device])
    client, auth = api
    url = "/api/v1" + path.format(d=device, c=community)
    response = client.get(url, params=params, headers=auth)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else detail[0]["msg"]
    assert text.startswith(message), text
