"""The device registry as the pipeline and the rule engine read it: every device (or
some) as ``core.directory.DeviceInfo``, the directory's loaders over a pool of their
own, and the feed of the registry's changes.

Every change that matters to the directory (a device registered, moved, retired
or deleted; a community's time zone) is announced on ``DEVICES_CHANNEL`` by
triggers (migration 0009), whoever makes it: the API, the CLI, plain SQL
(``store.devices`` writes the registry). The payload is the device id, or ``*`` for
"read them all".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import psycopg
from psycopg import sql

from core.directory import DeviceDirectory, DeviceInfo
from core.errors import ServiceUnavailable
from store.pools import DatabasePool, PoolWatch
from store.rows import Conn

__all__ = ["DEVICES_CHANNEL", "DirectoryReader", "follow_changes", "load_all", "load_some"]

_LOG = logging.getLogger(__name__)
DEVICES_CHANNEL = "sc_devices"
# Past this many devices named in one turn (a bulk import), one full read is cheaper.
_TARGETED_MAX = 500
# How long the feed waits for notifications per turn (and how often it beats).
_TURN_S = 1.0
# After a notification, how long the ones sent with it may take to arrive.
_DRAIN_S = 0.05
# After the feed's connection failed: wait before connecting again (doubling).
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0

_SELECT = (
    "SELECT d.id, d.community_id, d.device_class, d.expected_interval_s, d.building,"
    " c.time_zone, d.state FROM devices AS d JOIN communities AS c ON c.id = d.community_id"
)


def _info(row: tuple[Any, ...]) -> DeviceInfo:
    device_id, community, cls, interval, building, tz, state = row
    return DeviceInfo(
        str(device_id), str(community), str(cls), float(interval), building, str(tz), str(state)
    )


def load_all(conn: Conn) -> dict[str, DeviceInfo]:
    """Every device, decommissioned ones too (the gateway names them in its refusal)."""
    with conn.transaction():
        return {str(r[0]): _info(r) for r in conn.execute(_SELECT)}


def load_some(conn: Conn, device_ids: Collection[str]) -> dict[str, DeviceInfo]:
    with conn.transaction():
        rows = conn.execute(_SELECT + " WHERE d.id = ANY(%s)", (list(device_ids),))
        return {str(r[0]): _info(r) for r in rows}


class DirectoryReader:
    """The directory's loaders over a connection pool of their own (``store.pools``),
    apart from the writer's; an outage is ``ServiceUnavailable``. The directory calls
    one at a time."""

    def __init__(self, url: str, *, watch: PoolWatch | None = None) -> None:
        self.url = url
        # One load at a time: one connection.
        self._pool = DatabasePool(url, name="directory", watch=watch)

    def open(self) -> None:
        self._pool.open()

    def close(self) -> None:
        self._pool.close()

    def _run(self, work: Callable[[Conn], dict[str, DeviceInfo]]) -> dict[str, DeviceInfo]:
        with self._pool.connection() as conn:
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                raise ServiceUnavailable("database", str(exc).strip()) from exc

    def load_all(self) -> dict[str, DeviceInfo]:
        return self._run(load_all)

    def load_some(self, device_ids: Collection[str]) -> dict[str, DeviceInfo]:
        return self._run(lambda conn: load_some(conn, device_ids))

    def directory(self, *, miss_refresh_s: float) -> DeviceDirectory:
        return DeviceDirectory(
            load_all=self.load_all, load_some=self.load_some, miss_refresh_s=miss_refresh_s
        )


def follow_changes(
    url: str,
    directory: DeviceDirectory,
    stop: threading.Event,
    beat: Callable[[str], None] | None = None,
) -> None:
    """Until ``stop``: LISTEN for registry changes and apply them to ``directory``.

    After each (re)connection the directory is read in full: what changed while
    nobody listened was announced to no one."""
    name = threading.current_thread().name
    delay = _RETRY_MIN_S
    while not stop.is_set():
        if beat is not None:
            beat(name)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(DEVICES_CHANNEL)))
                directory.refresh()
                delay = _RETRY_MIN_S
                while not stop.is_set():
                    if beat is not None:
                        beat(name)
                    first = list(conn.notifies(timeout=_TURN_S, stop_after=1))
                    if not first:
                        continue
                    # What came with it (a bulk import names many): one read for all.
                    rest = conn.notifies(timeout=_DRAIN_S)
                    named = {n.payload for n in first} | {n.payload for n in rest}
                    if "*" in named or len(named) > _TARGETED_MAX:
                        directory.refresh()
                    else:
                        directory.changed(named)
        except (psycopg.OperationalError, ServiceUnavailable) as exc:
            _LOG.warning("device directory feed: database unavailable (%s); retrying", exc)
            stop.wait(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
