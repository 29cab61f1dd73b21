"""``/api/v1/devices``: register, list/filter, show."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from psycopg import sql
from psycopg.rows import class_row

from api.cursors import LimitQuery
from api.deps import ConnDep, SettingsDep, page_size
from api.schemas import DeviceClass, DeviceCreate, DevicePublic, DevicesPublic
from core.models import DeviceState

__all__ = ["DEVICE_COLUMNS", "get_device_or_404", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

# "reporting": data received within two expected intervals, judged by the database clock.
DEVICE_COLUMNS = sql.SQL(
    "id, community_id, device_class, model, name, state, expected_interval_s, created_at,"
    " last_seen, last_received_at, online, status_at,"
    " coalesce(last_received_at > now() - make_interval(secs => 2 * expected_interval_s),"
    " false) AS reporting"
)


def get_device_or_404(conn: psycopg.Connection[Any], device_id: str) -> DevicePublic:
    query = sql.SQL("SELECT {} FROM devices WHERE id = %s").format(DEVICE_COLUMNS)
    with conn.cursor(row_factory=class_row(DevicePublic)) as cur:
        found = cur.execute(query, (device_id,)).fetchone()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no device {device_id!r}")
    return found


@router.post("", status_code=status.HTTP_201_CREATED)
def register_device(conn: ConnDep, body: DeviceCreate) -> DevicePublic:
    """Register one device in an existing community. 409 if the id is taken."""
    query = sql.SQL(
        "INSERT INTO devices (id, community_id, device_class, model, name, expected_interval_s)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING {}"
    ).format(DEVICE_COLUMNS)
    params = (
        body.id,
        body.community_id,
        body.device_class,
        body.model,
        body.name,
        body.expected_interval_s,
    )
    try:
        with conn.cursor(row_factory=class_row(DevicePublic)) as cur:
            created = cur.execute(query, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"device {body.id!r} already exists"
        ) from None
    except psycopg.errors.ForeignKeyViolation:
        # Same shape as FastAPI's own validation errors, so clients parse one format.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "community_id"],
                    "msg": f"unknown community {body.community_id!r}:"
                    " create it first with POST /api/v1/communities",
                    "type": "unknown_community",
                }
            ],
        ) from None
    assert created is not None  # INSERT ... RETURNING returns the row
    return created


@router.get("")
def list_devices(
    conn: ConnDep,
    settings: SettingsDep,
    community_id: str | None = None,
    device_class: Annotated[DeviceClass | None, Query()] = None,
    state: DeviceState | None = None,
    limit: LimitQuery = None,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> DevicesPublic:
    """Devices ordered by id, optionally filtered. Pass ``next_cursor`` as ``after``."""
    size = page_size(settings, limit)
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[object] = []
    for column, value in (
        ("community_id", community_id),
        ("device_class", device_class),
        ("state", state.value if state else None),
    ):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if after is not None:
        where.append(sql.SQL("id > %s"))
        params.append(after)
    query = sql.SQL("SELECT {} FROM devices WHERE {} ORDER BY id LIMIT %s").format(
        DEVICE_COLUMNS, sql.SQL(" AND ").join(where)
    )
    with conn.cursor(row_factory=class_row(DevicePublic)) as cur:
        rows = cur.execute(query, [*params, size + 1]).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    return DevicesPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.get("/{device_id}")
def get_device(conn: ConnDep, device_id: str) -> DevicePublic:
    """One device with its last-seen time, last reported status and whether it is reporting."""
    return get_device_or_404(conn, device_id)
