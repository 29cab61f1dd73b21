"""Helpers for the alert tests (no tests here): a clock the test moves, devices, batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from alerts.listener import AlertListener
from alerts.model import AlertChange, ChangeKind
from alerts.store import AlertStore
from core.models import DeviceEvent, Reading
from core.rules import Rule, Severity, parse_rule
from core.settings import AlertSettings
from ingest.batch import Accepted
from store import schema
from tests.integration.support import add_community

# 10:00 in Shanghai on a fixed day.
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
# The simplest rule there is: an alert on every SOS press.
SOS: dict[str, Any] = {
    "id": "sos",
    "type": "event",
    "title": "SOS",
    "severity": "critical",
    "events": ["sos_pressed"],
}


def sos_change(
    device: str,
    at: float,
    severity: Severity,
    *,
    rule: dict[str, Any] = SOS,
    kind: ChangeKind = ChangeKind.RAISE,
) -> AlertChange:
    """An SOS alert change of ``device`` in community c1, as the engine makes one."""
    return AlertChange(
        kind=kind,
        rule=parse_rule(rule),
        subject=f"device:{device}",
        community_id="c1",
        at=at,
        severity=severity,
        title="SOS",
        device_id=device,
    )


class Clock:
    """A clock only the test moves."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def at(self, seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)


def setup_devices(
    url: str, community: str, devices: Sequence[tuple[str, str, str | None]], interval: int = 60
) -> None:
    """Migrate, then register ``(device id, class, building)`` in ``community``."""
    schema.upgrade(url)
    with psycopg.connect(url) as conn:
        add_community(conn, community)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (id, community_id, device_class, expected_interval_s,"
                " building) VALUES (%s, %s, %s, %s, %s)",
                [(d, community, cls, interval, b) for d, cls, b in devices],
            )


def reading(
    device: str, metric: str, ts: datetime, value: float, cls: str = "wearable"
) -> Accepted:
    return Accepted(
        device_id=device,
        topic=f"community/x/{cls}/{device}/telemetry",
        payload=b"{}",
        readings=[Reading(device, metric, ts, value, None, ts)],
        device_time=ts,
        received_at=ts,
    )


def event(device: str, name: str, ts: datetime, data: dict[str, Any] | None = None) -> Accepted:
    return Accepted(
        device_id=device,
        topic=f"community/x/any/{device}/event",
        payload=b"{}",
        event=DeviceEvent(device, name, ts, data or {}, None, ts),
        device_time=ts,
        received_at=ts,
    )


def make_listener(
    url: str,
    clock: Clock,
    rules: Sequence[dict[str, Any] | Rule],
    *,
    worker: str = "test",
    flood_threshold: int = 10,
) -> AlertListener:
    parsed = [r if not isinstance(r, dict) else parse_rule(r) for r in rules]
    listener = AlertListener(
        store=AlertStore(url=url, worker=worker, flood_threshold=flood_threshold),
        settings=AlertSettings(tick_s=0.001, reload_s=0.001),
        clock=clock,
        seed=parsed,
        absence_grace_s=0.0,
    )
    listener.start()
    return listener


def c1_listener(
    url: str,
    rules: Sequence[dict[str, Any] | Rule],
    devices: Sequence[tuple[str, str, str | None]] = (("w1", "wearable", None),),
) -> tuple[Clock, AlertListener]:
    """Community c1 with ``devices`` (one wearable, w1, unless told), and a started
    listener of ``rules`` on a clock only the test moves."""
    setup_devices(url, "c1", devices)
    clock = Clock()
    return clock, make_listener(url, clock, rules)


def rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()
