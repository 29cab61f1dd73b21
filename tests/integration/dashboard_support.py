"""Helpers for the dashboard tests, API and browser (no tests here): communities with
buildings and devices in every connectivity, alerts inserted with chosen times or
raised through the alert store (which notifies the live stream), users and tokens."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg

from alerts.model import AlertChange, ChangeKind
from alerts.store import AlertStore
from core.access import Role
from core.rules import Severity, parse_rule
from store import schema
from store.accounts import create_token, create_user

Presence = Literal["online", "offline", "silent", "never_seen"]
_counter = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}{next(_counter)}"


def execute(url: str, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def community(
    url: str, community_id: str, name: str = "", time_zone: str = "Asia/Shanghai"
) -> None:
    schema.upgrade(url)
    execute(
        url,
        "INSERT INTO communities (id, name, time_zone) VALUES (%s, %s, %s)",
        (community_id, name or community_id, time_zone),
    )


def new_community(url: str, name: str = "", time_zone: str = "Asia/Shanghai") -> str:
    """A community of its own (a fresh id) for one test; returns its id."""
    community_id = fresh("c")
    community(url, community_id, name, time_zone)
    return community_id


def building(url: str, community_id: str, building_id: str, name: str = "") -> None:
    execute(
        url,
        "INSERT INTO buildings (community_id, id, name, floors) VALUES (%s, %s, %s, 18)",
        (community_id, building_id, name),
    )


def device(
    url: str,
    device_id: str,
    community_id: str,
    device_class: str,
    *,
    building: str | None = None,
    presence: Presence = "online",
    state: str = "active",
    interval_s: int = 60,
    now: datetime | None = None,
) -> None:
    """A device whose connectivity at ``now`` is ``presence`` (core.connectivity.judge)."""
    at = now or datetime.now(UTC)
    last: datetime | None = {
        "online": at - timedelta(seconds=10),
        "offline": at - timedelta(seconds=30),
        "silent": at - timedelta(seconds=10 * interval_s),
        "never_seen": None,
    }[presence]
    online, status_at = (
        (False, at - timedelta(seconds=5)) if presence == "offline" else (None, None)
    )
    execute(
        url,
        "INSERT INTO devices (id, community_id, device_class, model, name, expected_interval_s,"
        " building, state, last_seen, last_received_at, online, status_at)"
        " VALUES (%s, %s, %s, 'test', %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            device_id, community_id, device_class, f"{device_class} {device_id}", interval_s,
            building, state, last, last, online, status_at,
        ),
    )  # fmt: skip


def insert_alert(
    url: str,
    community_id: str,
    *,
    severity: str = "major",
    state: str = "open",
    raised_at: datetime,
    device_id: str | None = None,
    building: str | None = None,
    acknowledged_after_s: float | None = None,
    resolved_after_s: float | None = None,
    resolved_by: str = "user:op",
    title: str = "Test alert",
) -> int:
    """An alert row with chosen times, as the engine and the ack/resolve routes leave it."""
    acked = raised_at + timedelta(seconds=acknowledged_after_s) if acknowledged_after_s else None
    resolved = raised_at + timedelta(seconds=resolved_after_s) if resolved_after_s else None
    rows = execute(
        url,
        "INSERT INTO alerts (rule_id, subject, community_id, device_id, building, rule_type,"
        " severity, initial_severity, state, title, first_seen, last_seen, raised_at,"
        " acknowledged_at, acknowledged_by, resolved_at, resolved_by)"
        " VALUES (%s, %s, %s, %s, %s, 'event', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            fresh("rule"), f"device:{device_id or fresh('x')}", community_id, device_id, building,
            severity, severity, state, title, raised_at, raised_at, raised_at,
            acked, "user:op" if acked else None, resolved, resolved_by if resolved else None,
        ),
    )  # fmt: skip
    return int(rows[0][0])


def raise_alert(
    url: str,
    community_id: str,
    device_id: str | None,
    *,
    rule_id: str = "wearable.sos",
    title: str = "SOS pressed",
    severity: Severity = Severity.CRITICAL,
    building: str | None = None,
    at: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Raise through the alert store, as the engine does: history row and pg_notify."""
    rule = parse_rule(
        {"id": rule_id, "type": "event", "title": title, "severity": severity, "events": ["fault"]}
    )
    when = (at or datetime.now(UTC)).timestamp()
    subject = f"device:{device_id}" if device_id else f"building:{community_id}/{building}"
    store = AlertStore(url=url, worker=fresh("w"))
    try:
        store.apply(
            [
                AlertChange(
                    kind=ChangeKind.RAISE,
                    rule=rule,
                    subject=subject,
                    community_id=community_id,
                    at=when,
                    severity=severity,
                    title=title,
                    device_id=device_id,
                    building=building,
                    details=details or {},
                )
            ],
            {},
            when,
        )
    finally:
        store.close()
    rows = execute(
        url,
        "SELECT id FROM alerts WHERE rule_id = %s AND subject = %s AND state <> 'resolved'",
        (rule_id, subject),
    )
    return int(rows[0][0])


def token(url: str, role: Role | None = None, communities: Sequence[str] = ()) -> str:
    """A bearer token: of a new user with ``role`` in ``communities``, or the built-in admin."""
    with psycopg.connect(url, autocommit=True) as conn:
        if role is None:
            return create_token(conn, "dashboard test")
        user = create_user(conn, fresh(role.value), role, list(communities))
        return create_token(conn, "dashboard test", user_id=user.id)
