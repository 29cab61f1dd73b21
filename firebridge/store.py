"""Every SQL statement of the bridge: UITDs and their points, the status words it
remembers, downstream commands, and whether rows are committed; its dead letters go
through ``store.dead_letters``, on the bridge's connection and transaction.

Async (psycopg's pool): the bridge is an asyncio server and never blocks its loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from core.errors import ServiceUnavailable
from firebridge.mapping import CommitKey, Point, PointSpec, Uitd
from store.dead_letters import NewDeadLetter, insert_dead_letters_async
from store.pools import CONNECT_TIMEOUT_S, RECONNECT_TIMEOUT_S

__all__ = ["BridgeStore", "DeadFrame"]

_LOG = logging.getLogger(__name__)
# Devices of panel points report on change, not on a schedule: silence is not absence
# (the UITD's heartbeat is watched by the bridge instead). The registry's maximum.
POINT_INTERVAL_S = 7 * 24 * 3600

_UITD = """
SELECT u.device_id, u.community_id, d.building, u.address, u.auto_provision, u.heartbeat_s,
       d.state, c.time_zone
  FROM uitds AS u JOIN devices AS d ON d.id = u.device_id
  JOIN communities AS c ON c.id = u.community_id
 WHERE u.address = %s
"""
_POINTS = "SELECT point, device_id, status FROM uitd_points WHERE uitd_id = %s"
_NEW_DEVICE = """
INSERT INTO devices (id, community_id, device_class, model, name, building, expected_interval_s,
                     installed_by)
VALUES (%s, %s, 'fire', %s, %s, %s, %s, 'fire-bridge')
ON CONFLICT (id) DO NOTHING
"""
_NEW_POINT = """
INSERT INTO uitd_points (uitd_id, point, community_id, device_id, system_type, system_address,
                         component_type, component_address, description)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (uitd_id, point) DO NOTHING
"""
_STATE = """
UPDATE uitd_points AS p SET status = v.status, status_ts = v.ts
  FROM unnest(%s::text[], %s::int[], %s::timestamptz[]) AS v(point, status, ts)
 WHERE p.uitd_id = %s AND p.point = v.point
"""
_EVENTS_COMMITTED = """
SELECT k.i FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY AS k(d, t, e, i)
 WHERE EXISTS (SELECT 1 FROM device_events AS e
                WHERE e.device_id = k.d AND e.ts = k.t AND e.event = k.e)
"""
_READINGS_COMMITTED = """
SELECT k.i FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY AS k(d, t, m, i)
 WHERE EXISTS (SELECT 1 FROM readings AS r
                WHERE r.device_id = k.d AND r.metric = k.m AND r.ts = k.t)
"""

_OUTCOME = {
    "confirmed": "UPDATE uitd_commands SET outcome = %s, confirmed_at = %s WHERE id = %s",
    "answered": "UPDATE uitd_commands SET outcome = %s, answered_at = %s WHERE id = %s",
}
# The time goes nowhere: a denial or a miss is its row's last word, at its sent_at.
_OUTCOME_ONLY = (
    "UPDATE uitd_commands SET outcome = %s WHERE %s::timestamptz IS NOT NULL AND id = %s"
)


class DeadFrame:
    """A frame (or bytes) the bridge refused, for ``dead_letters``."""

    __slots__ = ("detail", "raw", "reason", "received_at", "topic")

    def __init__(
        self, topic: str, raw: bytes, reason: str, detail: str, received_at: datetime
    ) -> None:
        self.topic = topic
        self.raw = raw
        self.reason = reason
        self.detail = detail
        self.received_at = received_at


def _gave_up(pool: AsyncConnectionPool[Any]) -> None:
    _LOG.error(
        "database pool %s: no connection for %.0f s; trying again on the next request",
        pool.name,
        pool.reconnect_timeout,
    )


class BridgeStore:
    def __init__(self, *, url: str, worker: str, max_size: int = 8) -> None:
        self.worker = worker
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            check=AsyncConnectionPool.check_connection,
            # As every pool of the platform (store.pools): attempts at most ~8 s apart.
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            reconnect_failed=_gave_up,
            name="fire-bridge",
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    async def _run(self, sql: str | bytes, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(sql.encode() if isinstance(sql, str) else sql, params)
                return await cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("database", str(exc)) from exc

    # -- registry --------------------------------------------------------------------

    async def uitd(self, address: bytes) -> Uitd | None:
        rows = await self._run(_UITD, (address,))
        if not rows:
            return None
        device_id, community, building, addr, auto, heartbeat, state, zone = rows[0]
        return Uitd(
            device_id, community, building, bytes(addr), auto, heartbeat, state, ZoneInfo(zone)
        )

    async def points(self, uitd_id: str) -> dict[str, Point]:
        rows = await self._run(_POINTS, (uitd_id,))
        return {key: Point(key, device_id, status) for key, device_id, status in rows}

    async def provision(self, uitd: Uitd, specs: Sequence[PointSpec]) -> None:
        """Platform devices for new points of a UITD that allows it, in the UITD's building."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                for spec in specs:
                    device_id = f"{uitd.device_id}.{spec.key}"
                    name = spec.description or f"panel point {spec.key}"
                    model = (
                        f"GB/T 26875 component type {spec.component_type}"
                        if spec.component_type is not None
                        else f"GB/T 26875 system type {spec.system_type}"
                    )
                    await conn.execute(
                        _NEW_DEVICE.encode(),
                        (
                            device_id,
                            uitd.community_id,
                            model,
                            name,
                            uitd.building,
                            POINT_INTERVAL_S,
                        ),
                    )
                    await conn.execute(
                        _NEW_POINT.encode(),
                        (
                            uitd.device_id,
                            spec.key,
                            uitd.community_id,
                            device_id,
                            spec.system_type,
                            spec.system_address,
                            spec.component_type,
                            spec.component_address,
                            spec.description,
                        ),
                    )
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("database", str(exc)) from exc
        _LOG.info("provisioned %d points of UITD %s", len(specs), uitd.device_id)

    async def save_states(self, uitd_id: str, states: Sequence[tuple[str, int, datetime]]) -> None:
        if not states:
            return
        # The last word of a point wins (a frame may carry several for one point).
        last = {key: (word, ts) for key, word, ts in states}
        await self._run(
            _STATE,
            (
                list(last),
                [w for w, _ in last.values()],
                [t for _, t in last.values()],
                uitd_id,
            ),
        )

    # -- refusals ----------------------------------------------------------------------

    async def dead_letters(self, items: Sequence[DeadFrame]) -> None:
        if not items:
            return
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await insert_dead_letters_async(
                    cur,
                    [
                        NewDeadLetter(
                            d.received_at,
                            d.topic,
                            d.raw,
                            len(d.raw),
                            d.reason,
                            d.detail,
                            self.worker,
                        )
                        for d in items
                    ],
                )
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("database", str(exc)) from exc

    # -- commit confirmation -------------------------------------------------------------

    async def committed(self, keys: Sequence[CommitKey]) -> set[int]:
        """Indexes of ``keys`` whose rows are stored (committed by the pipeline)."""
        found: set[int] = set()
        for kind, sql in (("event", _EVENTS_COMMITTED), ("reading", _READINGS_COMMITTED)):
            index = [i for i, k in enumerate(keys) if k.kind == kind]
            if not index:
                continue
            rows = await self._run(
                sql,
                (
                    [keys[i].device_id for i in index],
                    [keys[i].ts for i in index],
                    [keys[i].name for i in index],
                ),
            )
            found.update(index[int(r[0]) - 1] for r in rows)
        return found

    # -- downstream commands ---------------------------------------------------------------

    async def command_sent(
        self, uitd: Uitd, kind: str, serial: int, sent_at: datetime, detail: dict[str, Any]
    ) -> int:
        rows = await self._run(
            "INSERT INTO uitd_commands (uitd_id, community_id, kind, serial, sent_at, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (uitd.device_id, uitd.community_id, kind, serial, sent_at, Jsonb(detail)),
        )
        return int(rows[0][0])

    async def command_outcome(self, command_id: int, outcome: str, at: datetime) -> None:
        """'confirmed' or 'answered' (with when), 'denied' or 'missed'."""
        await self._run(_OUTCOME.get(outcome, _OUTCOME_ONLY), (outcome, at, command_id))
