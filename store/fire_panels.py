"""The fire panels of the GB/T 26875 bridge: the one writer of ``uitds``,
``uitd_points`` and ``uitd_commands``, and the bridge's reads (a UITD by its address,
its points, whether the rows it published are committed).

The registry side (``smartcommunity fire-bridge register`` and ``map``, test set-up)
is synchronous; the bridge itself is an asyncio server, so what it runs has an
``_async`` twin on a psycopg ``AsyncConnection``. A UITD and its panel points are
also devices: those rows go through ``store.devices`` (``insert_fire_device``) in
the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from store.rows import AsyncConn, Conn

__all__ = [
    "PanelPoint",
    "committed_async",
    "insert_command_async",
    "insert_point",
    "insert_point_async",
    "insert_uitd",
    "list_uitds",
    "point_rows_async",
    "save_states_async",
    "set_command_outcome_async",
    "uitd_by_address_async",
    "uitd_exists",
    "uitd_place",
]


# --- the registry (synchronous) ----------------------------------------------------------


def insert_uitd(
    conn: Conn,
    *,
    device_id: str,
    community_id: str,
    address: bytes,
    auto_provision: bool,
    heartbeat_s: int,
) -> None:
    """The UITD's address on the wire and its own point ('': the device itself), in
    the caller's transaction (after its device row)."""
    conn.execute(
        "INSERT INTO uitds (device_id, community_id, address, auto_provision, heartbeat_s)"
        " VALUES (%s, %s, %s, %s, %s)",
        (device_id, community_id, address, auto_provision, heartbeat_s),
    )
    conn.execute(
        "INSERT INTO uitd_points (uitd_id, point, community_id, device_id) VALUES (%s, '', %s, %s)",
        (device_id, community_id, device_id),
    )


def uitd_exists(conn: Conn, uitd_id: str) -> bool:
    """Whether a UITD of that device id is registered."""
    return (
        conn.execute("SELECT 1 FROM uitds WHERE device_id = %s", (uitd_id,)).fetchone() is not None
    )


def uitd_place(conn: Conn, uitd_id: str) -> tuple[str, str | None] | None:
    """The UITD's community and building, or None if there is no such UITD."""
    return conn.execute(
        "SELECT u.community_id, d.building FROM uitds AS u JOIN devices AS d ON d.id = u.device_id"
        " WHERE u.device_id = %s",
        (uitd_id,),
    ).fetchone()


_POINT_COLUMNS = (
    "INSERT INTO uitd_points (uitd_id, point, community_id, device_id, system_type,"
    " system_address, component_type, component_address, description)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_NEW_POINT: LiteralString = _POINT_COLUMNS + " ON CONFLICT (uitd_id, point) DO NOTHING"


@dataclass(frozen=True, slots=True)
class PanelPoint:
    """A row of ``uitd_points``, its fields in the table's column order."""

    uitd_id: str
    point: str
    community_id: str
    device_id: str
    system_type: int | None
    system_address: int | None
    component_type: int | None
    component_address: int | None
    description: str


def insert_point(conn: Conn, point: PanelPoint) -> None:
    """A mapped panel point (a point already mapped is an error), in the caller's
    transaction (after its device row)."""
    conn.execute(_POINT_COLUMNS, astuple(point))


def list_uitds(conn: Conn) -> list[tuple[Any, ...]]:
    """Every UITD: id, community, address (hex), building, auto-provision, heartbeat,
    online, and how many points are mapped; by id."""
    return conn.execute(
        "SELECT u.device_id, u.community_id, encode(u.address, 'hex'), d.building,"
        " u.auto_provision, u.heartbeat_s, d.online,"
        " (SELECT count(*) FROM uitd_points AS p WHERE p.uitd_id = u.device_id AND p.point <> '')"
        " FROM uitds AS u JOIN devices AS d ON d.id = u.device_id ORDER BY u.device_id"
    ).fetchall()


# --- the bridge (asyncio) -----------------------------------------------------------------

_UITD = """
SELECT u.device_id, u.community_id, d.building, u.address, u.auto_provision, u.heartbeat_s,
       d.state, c.time_zone
  FROM uitds AS u JOIN devices AS d ON d.id = u.device_id
  JOIN communities AS c ON c.id = u.community_id
 WHERE u.address = %s
"""
_STATE = """
UPDATE uitd_points AS p SET status = v.status, status_ts = v.ts
  FROM unnest(%s::text[], %s::int[], %s::timestamptz[]) AS v(point, status, ts)
 WHERE p.uitd_id = %s AND p.point = v.point
"""
_COMMITTED: dict[str, LiteralString] = {
    "event": """
SELECT k.i FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY AS k(d, t, e, i)
 WHERE EXISTS (SELECT 1 FROM device_events AS e
                WHERE e.device_id = k.d AND e.ts = k.t AND e.event = k.e)
""",
    "reading": """
SELECT k.i FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY AS k(d, t, m, i)
 WHERE EXISTS (SELECT 1 FROM readings AS r
                WHERE r.device_id = k.d AND r.metric = k.m AND r.ts = k.t)
""",
}
_OUTCOME: dict[str, LiteralString] = {
    "confirmed": "UPDATE uitd_commands SET outcome = %s, confirmed_at = %s WHERE id = %s",
    "answered": "UPDATE uitd_commands SET outcome = %s, answered_at = %s WHERE id = %s",
}
# The time goes nowhere: a denial or a miss is its row's last word, at its sent_at.
_OUTCOME_ONLY = (
    "UPDATE uitd_commands SET outcome = %s WHERE %s::timestamptz IS NOT NULL AND id = %s"
)


async def _rows(conn: AsyncConn, query: LiteralString, params: Sequence[Any]) -> list[Any]:
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return await cur.fetchall() if cur.description is not None else []


async def uitd_by_address_async(conn: AsyncConn, address: bytes) -> tuple[Any, ...] | None:
    """The UITD at ``address``: device id, community, building, address, auto-provision,
    heartbeat, device state, the community's time zone; None if none is registered."""
    rows = await _rows(conn, _UITD, (address,))
    return tuple(rows[0]) if rows else None


async def point_rows_async(conn: AsyncConn, uitd_id: str) -> list[tuple[str, str, int | None]]:
    """The UITD's points: (point, device id, last status word)."""
    rows = await _rows(
        conn, "SELECT point, device_id, status FROM uitd_points WHERE uitd_id = %s", (uitd_id,)
    )
    return [(key, device_id, status) for key, device_id, status in rows]


async def insert_point_async(conn: AsyncConn, point: PanelPoint) -> None:
    """A provisioned panel point; one already there is left as it is. In the caller's
    transaction (after its device row)."""
    await conn.execute(_NEW_POINT, astuple(point))


async def save_states_async(
    conn: AsyncConn,
    uitd_id: str,
    points: Sequence[str],
    words: Sequence[int],
    times: Sequence[datetime],
) -> None:
    """The last status word of each point and its time (one row per point)."""
    await _rows(conn, _STATE, (list(points), list(words), list(times), uitd_id))


async def committed_async(
    conn: AsyncConn,
    kind: str,
    device_ids: Sequence[str],
    times: Sequence[datetime],
    names: Sequence[str],
) -> list[int]:
    """1-based positions of the (device, time, event or metric) keys of ``kind``
    ('event' or 'reading') whose rows are stored."""
    rows = await _rows(conn, _COMMITTED[kind], (list(device_ids), list(times), list(names)))
    return [int(r[0]) for r in rows]


async def insert_command_async(
    conn: AsyncConn,
    *,
    uitd_id: str,
    community_id: str,
    kind: str,
    serial: int,
    sent_at: datetime,
    detail: dict[str, Any],
) -> int:
    """A downstream command as sent; its id."""
    rows = await _rows(
        conn,
        "INSERT INTO uitd_commands (uitd_id, community_id, kind, serial, sent_at, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (uitd_id, community_id, kind, serial, sent_at, Jsonb(detail)),
    )
    return int(rows[0][0])


async def set_command_outcome_async(
    conn: AsyncConn, command_id: int, outcome: str, at: datetime
) -> None:
    """'confirmed' or 'answered' (with when), 'denied' or 'missed'."""
    await _rows(conn, _OUTCOME.get(outcome, _OUTCOME_ONLY), (outcome, at, command_id))
