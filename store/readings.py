"""Reads of the stored stream: a device's readings and events by time range (the
API), and what the rule engine reloads on start (recent readings and events, each
device's last sign of life and lost links). The ingest writer's COPY path, which
writes these tables, stays in ``ingest/writer.py``: it is the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from psycopg import sql

from core.models import DeviceEvent, Reading
from store.rows import Conn, records
from store.series import DEVICE_EVENTS, DEVICE_READINGS

__all__ = [
    "device_events",
    "device_readings",
    "last_seen",
    "links_down",
    "recent_events",
    "recent_readings",
]

R = TypeVar("R")  # the record a series row becomes


def _series(
    conn: Conn,
    record: type[R],
    query: sql.SQL,
    column: str,
    device_id: str,
    start: datetime,
    end: datetime,
    value: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[R]:
    """A device's rows of ``query`` in ``[start, end)`` by (ts, ``column``): those whose
    ``column`` is ``value`` when given, after the (ts, ``column``) position ``after``."""
    terms: list[sql.Composable] = []
    params: list[object] = [device_id, start, end]
    if value is not None:
        terms.append(sql.SQL(" AND {} = %s").format(sql.Identifier(column)))
        params.append(value)
    if after is not None:
        terms.append(sql.SQL(" AND (ts, {}) > (%s, %s)").format(sql.Identifier(column)))
        params += list(after)
    return records(conn, record, query.format(sql.Composed(terms)), [*params, limit])


def device_readings(
    conn: Conn,
    device_id: str,
    start: datetime,
    end: datetime,
    *,
    metric: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Reading]:
    """Readings in ``[start, end)`` by (ts, metric), after the (ts, metric) ``after``."""
    return _series(
        conn, Reading, DEVICE_READINGS, "metric", device_id, start, end, metric, after, limit
    )


def device_events(
    conn: Conn,
    device_id: str,
    start: datetime,
    end: datetime,
    *,
    event: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[DeviceEvent]:
    """Events in ``[start, end)`` by (ts, event), after the (ts, event) ``after``."""
    return _series(
        conn, DeviceEvent, DEVICE_EVENTS, "event", device_id, start, end, event, after, limit
    )


# -- what the engine reloads ---------------------------------------------------------------


def last_seen(conn: Conn) -> dict[str, float]:
    """Each device's newest sign of life (epoch s), read once at start: from then on
    the engine sees every message itself."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, extract(epoch FROM last_seen)::float8 FROM devices"
            " WHERE state <> 'decommissioned' AND last_seen IS NOT NULL"
        ).fetchall()
    return {str(device_id): float(at) for device_id, at in rows}


def links_down(conn: Conn) -> dict[str, float]:
    """Devices whose last status said offline with no data since (a Will), and when:
    a restart must not forget a link lost just before it."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, extract(epoch FROM status_at)::float8 FROM devices"
            " WHERE state = 'active' AND online IS FALSE AND status_at IS NOT NULL"
            " AND (last_received_at IS NULL OR last_received_at < status_at)"
        ).fetchall()
    return {str(device_id): float(at) for device_id, at in rows}


def recent_readings(
    conn: Conn, device_ids: Sequence[str], metric: str, since: float
) -> list[tuple[str, float, float]]:
    """Stored readings of ``metric`` after ``since`` (primary-key probes per device)."""
    if not device_ids:
        return []
    with conn.transaction():
        return [
            (str(d), float(t), float(v))
            for d, t, v in conn.execute(
                "SELECT device_id, extract(epoch FROM ts)::float8, value FROM readings"
                " WHERE device_id = ANY(%s) AND metric = %s AND ts > to_timestamp(%s)"
                " ORDER BY ts",
                (list(device_ids), metric, since),
            )
        ]


def recent_events(
    conn: Conn, after: datetime, limit: int
) -> list[tuple[str, str, datetime, dict[str, Any], datetime]]:
    """Device events received after ``after`` (replayed on start), oldest first."""
    with conn.transaction():
        return [
            (str(d), str(e), ts, dict(data), received)
            for d, e, ts, data, received in conn.execute(
                "SELECT device_id, event, ts, data, received_at FROM device_events"
                " WHERE received_at > %s ORDER BY received_at LIMIT %s",
                (after, limit),
            )
        ]
