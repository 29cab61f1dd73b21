"""Maintenance windows: the one writer of ``maintenance_windows``.

An operator creates, lists and ends windows through the API; the alert engine
loads those not ended yet and suppresses the alerts they cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from store.rows import Conn, records
from store.scoping import Communities, scoped

__all__ = [
    "MaintenanceRecord",
    "MaintenanceRefused",
    "MaintenanceWindow",
    "create_maintenance",
    "end_maintenance",
    "list_maintenance",
    "load_maintenance",
]


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A window as the engine holds it (epoch seconds)."""

    id: int
    community_id: str
    device_id: str | None
    building: str | None
    starts_at: float
    ends_at: float
    reason: str

    def covers(self, community_id: str, device_id: str | None, building: str | None) -> bool:
        if community_id != self.community_id:
            return False
        if self.device_id is not None:
            return device_id == self.device_id
        if self.building is not None:
            return building == self.building
        return True  # the whole community


def load_maintenance(conn: Conn, now: float) -> list[MaintenanceWindow]:
    """Windows that have not ended yet (future ones included)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, community_id, device_id, building, extract(epoch FROM starts_at)::float8,"
            " extract(epoch FROM ends_at)::float8, reason FROM maintenance_windows"
            " WHERE ends_at > to_timestamp(%s)",
            (now,),
        ).fetchall()
    return [MaintenanceWindow(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class MaintenanceRecord:
    id: int
    community_id: str
    device_id: str | None
    building: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


class MaintenanceRefused(ValueError):
    """The window names a community or device that does not exist (``field`` says which)."""

    def __init__(self, field: Literal["community_id", "device_id"]) -> None:
        super().__init__(field)
        self.field = field


_MAINTENANCE = (
    "id, community_id, device_id, building, starts_at, ends_at, reason, created_by, created_at"
)


def create_maintenance(
    conn: Conn,
    *,
    community_id: str,
    device_id: str | None,
    building: str | None,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    created_by: str,
) -> MaintenanceRecord:
    try:
        with conn.cursor(row_factory=class_row(MaintenanceRecord)) as cur:
            created = cur.execute(
                "INSERT INTO maintenance_windows (community_id, device_id, building, starts_at,"  # noqa: S608 - constant columns, values are parameters
                " ends_at, reason, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_MAINTENANCE}",
                (community_id, device_id, building, starts_at, ends_at, reason, created_by),
            ).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        if "community" in (exc.diag.constraint_name or ""):
            raise MaintenanceRefused("community_id") from None
        raise MaintenanceRefused("device_id") from None
    assert created is not None
    return created


def list_maintenance(
    conn: Conn, communities: Communities, *, community_id: str | None, current: bool
) -> list[MaintenanceRecord]:
    """Windows by start; ``current``: only those not ended yet."""
    where, params = scoped(communities, (("community_id = %s", community_id),))
    if current:
        where.append("ends_at > now()")
    return records(
        conn,
        MaintenanceRecord,
        f"SELECT {_MAINTENANCE} FROM maintenance_windows WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY starts_at",
        params,
    )


def end_maintenance(conn: Conn, window_id: int) -> bool:
    """End a current window now; False if there is no current window of that id."""
    cur = conn.execute(
        "UPDATE maintenance_windows SET ends_at = greatest(starts_at + interval '1 microsecond',"
        " now()) WHERE id = %s AND ends_at > now()",
        (window_id,),
    )
    return cur.rowcount == 1
