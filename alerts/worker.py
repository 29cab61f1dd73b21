"""A thread that works through the database on a schedule: the webhook sender and
the incident desk.

Each pass takes a connection of the worker's own pool (``store.pools``); a lost
connection is logged and the pass tried again at the next turn. Between passes the
thread waits its interval or until ``wake``. The pool is opened by the thread on
first use and closed when the thread ends.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg

from core.errors import ServiceUnavailable
from store.pools import DatabasePool

__all__ = ["PoolWorker", "outage_text"]

_LOG = logging.getLogger(__name__)


def outage_text(exc: Exception) -> str:
    """ "database unavailable: <why>" for a driver error or a pool's ServiceUnavailable."""
    return str(exc) if isinstance(exc, ServiceUnavailable) else f"database unavailable: {exc}"


class PoolWorker(ABC):
    """One thread named ``THREAD`` making a ``work`` pass every ``interval_s`` (sooner
    when woken); ``stop`` waits ``join_s`` for the pass under way to end."""

    THREAD: ClassVar[str]
    POOL: ClassVar[str]  # the connection pool's name, in its errors and logs
    LABEL: ClassVar[str]  # what the outage warnings call the worker

    def __init__(self, url: str, *, interval_s: float, join_s: float) -> None:
        self.interval_s = interval_s
        self.join_s = join_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat: Callable[[str], None] | None = None
        # Opened by the worker's thread on first use, closed when it ends.
        self._pool = DatabasePool(url, name=self.POOL, autocommit=True)

    @abstractmethod
    def work(self, conn: psycopg.Connection[Any]) -> None:
        """One pass over what is due."""

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None:
        """On a thread of its own, or on one ``spawn(name, target)`` starts (the
        pipeline's supervisor: the thread's end then ends the process, and ``beat``
        says at each turn that it still runs)."""
        self._beat = beat
        if spawn is not None:
            self._thread = spawn(self.THREAD, self._run)
            return
        self._thread = threading.Thread(target=self._run, name=self.THREAD, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.join_s)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._beat is not None:
                    self._beat(self.THREAD)
                try:
                    with self._pool.connection() as conn:
                        self.work(conn)
                except (psycopg.OperationalError, ServiceUnavailable) as exc:
                    # A broken connection goes back to the pool, which replaces it.
                    _LOG.warning("%s: %s", self.LABEL, outage_text(exc))
                self._wake.wait(self.interval_s)
                self._wake.clear()
        finally:
            self._pool.close()  # its connections and threads end with the worker's
