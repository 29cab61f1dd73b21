"""The bridge's database: UITDs and their points, the status words it remembers,
downstream commands, and whether rows are committed (``store.fire_panels``; the
devices it provisions through ``store.devices``); its dead letters go through
``store.dead_letters``, on the bridge's connection and transaction. This module
holds the pool and turns a lost database into ``ServiceUnavailable``; the SQL is
in ``store/``.

Async (psycopg's pool): the bridge is an asyncio server and never blocks its loop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.errors import ServiceUnavailable
from firebridge.mapping import CommitKey, Point, PointSpec, Uitd
from store import devices, fire_panels
from store.dead_letters import NewDeadLetter, insert_dead_letters_async
from store.pools import CONNECT_TIMEOUT_S, RECONNECT_TIMEOUT_S

__all__ = [
    "POINT_INTERVAL_S",
    "BridgeStore",
    "DeadFrame",
    "panel_point",
    "point_device",
]

_LOG = logging.getLogger(__name__)
# Devices of panel points report on change, not on a schedule: silence is not absence
# (the UITD's heartbeat is watched by the bridge instead). The registry's maximum.
POINT_INTERVAL_S = 7 * 24 * 3600

T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[Any]


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


def point_device(
    spec: PointSpec, community_id: str, building: str | None, device_id: str
) -> devices.FireDevice:
    """The fire device a panel point becomes."""
    if spec.component_address is not None:
        model = f"GB/T 26875 component type {spec.component_type}"
    else:
        model = f"GB/T 26875 system type {spec.system_type}"
    name = spec.description or f"panel point {spec.key}"
    return devices.FireDevice(device_id, community_id, model, name, building, POINT_INTERVAL_S)


def panel_point(
    spec: PointSpec, uitd_id: str, community_id: str, device_id: str
) -> fire_panels.PanelPoint:
    """The ``uitd_points`` row of a point mapped to ``device_id``: the spec's fields, its
    key as the point."""
    row = asdict(spec)
    point = row.pop("key")
    return fire_panels.PanelPoint(
        uitd_id=uitd_id, point=point, community_id=community_id, device_id=device_id, **row
    )


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

    async def _run(self, call: Callable[[AsyncConn], Awaitable[T]]) -> T:
        try:
            async with self.pool.connection() as conn:
                return await call(conn)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("database", str(exc)) from exc

    # -- registry --------------------------------------------------------------------

    async def uitd(self, address: bytes) -> Uitd | None:
        row = await self._run(lambda conn: fire_panels.uitd_by_address_async(conn, address))
        if row is None:
            return None
        device_id, community, building, addr, auto, heartbeat, state, zone = row
        return Uitd(
            device_id, community, building, bytes(addr), auto, heartbeat, state, ZoneInfo(zone)
        )

    async def points(self, uitd_id: str) -> dict[str, Point]:
        rows = await self._run(lambda conn: fire_panels.point_rows_async(conn, uitd_id))
        return {key: Point(key, device_id, status) for key, device_id, status in rows}

    async def provision(self, uitd: Uitd, specs: Sequence[PointSpec]) -> None:
        """Platform devices for new points of a UITD that allows it, in the UITD's building."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                for spec in specs:
                    device_id = f"{uitd.device_id}.{spec.key}"
                    await devices.insert_fire_device_async(
                        conn, point_device(spec, uitd.community_id, uitd.building, device_id)
                    )
                    point = panel_point(spec, uitd.device_id, uitd.community_id, device_id)
                    await fire_panels.insert_point_async(conn, point)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("database", str(exc)) from exc
        _LOG.info("provisioned %d points of UITD %s", len(specs), uitd.device_id)

    async def save_states(self, uitd_id: str, states: Sequence[tuple[str, int, datetime]]) -> None:
        if not states:
            return
        # The last word of a point wins (a frame may carry several for one point).
        last = {key: (word, ts) for key, word, ts in states}
        await self._run(
            lambda conn: fire_panels.save_states_async(
                conn,
                uitd_id,
                list(last),
                [w for w, _ in last.values()],
                [t for _, t in last.values()],
            )
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
        for kind in ("event", "reading"):
            index = [i for i, k in enumerate(keys) if k.kind == kind]
            if not index:
                continue
            positions = await self._run(
                functools.partial(
                    fire_panels.committed_async,
                    kind=kind,
                    device_ids=[keys[i].device_id for i in index],
                    times=[keys[i].ts for i in index],
                    names=[keys[i].name for i in index],
                )
            )
            found.update(index[p - 1] for p in positions)
        return found

    # -- downstream commands ---------------------------------------------------------------

    async def command_sent(
        self, uitd: Uitd, kind: str, serial: int, sent_at: datetime, detail: dict[str, Any]
    ) -> int:
        return await self._run(
            lambda conn: fire_panels.insert_command_async(
                conn,
                uitd_id=uitd.device_id,
                community_id=uitd.community_id,
                kind=kind,
                serial=serial,
                sent_at=sent_at,
                detail=detail,
            )
        )

    async def command_outcome(self, command_id: int, outcome: str, at: datetime) -> None:
        """'confirmed' or 'answered' (with when), 'denied' or 'missed'."""
        await self._run(
            lambda conn: fire_panels.set_command_outcome_async(conn, command_id, outcome, at)
        )
