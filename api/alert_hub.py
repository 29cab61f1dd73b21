"""One LISTEN connection per API process, fanned out to every open alert stream.

A stream used to hold its own PostgreSQL connection outside the pool, so fifteen
browser tabs of one user took fifteen of the server's backends. The hub listens
once (from start-up, so a stream that has its headers hears everything committed
after them), puts each notification's payload on every subscriber's queue, and
reconnects after losing the database. A subscriber too slow to keep up is closed
rather than allowed to grow without bound; its client reconnects with
``Last-Event-ID`` and gets what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from store.alerts import listen

__all__ = ["AlertHub", "Subscription", "TooManyStreams"]

_LOG = logging.getLogger(__name__)

# Events a subscriber may have waiting; past this it is closed (see above).
QUEUE_SIZE = 1_000
RECONNECT_S = 1.0


class TooManyStreams(Exception):
    """The user already has the most streams allowed open."""


@dataclass(eq=False)
class Subscription:
    user_id: int
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class AlertHub:
    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._subscribers: set[Subscription] = set()
        self._per_user: Counter[int] = Counter()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    def streams_of(self, user_id: int) -> int:
        return self._per_user[user_id]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in list(self._subscribers):
            self._close(subscriber)

    def subscribe(self, user_id: int, cap: int) -> Subscription:
        """A new subscriber; TooManyStreams when the user has ``cap`` open already.
        The event loop runs this without a pause, so the count cannot race."""
        if self._per_user[user_id] >= cap:
            raise TooManyStreams
        subscriber = Subscription(user_id)
        self._subscribers.add(subscriber)
        self._per_user[user_id] += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscription) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._per_user[subscriber.user_id] -= 1
            if self._per_user[subscriber.user_id] <= 0:
                del self._per_user[subscriber.user_id]

    def _close(self, subscriber: Subscription) -> None:
        """End a subscriber's stream: None on its queue (room is made for it)."""
        while subscriber.queue.full():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)
        self.unsubscribe(subscriber)

    def _publish(self, payload: str) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(payload)
            except asyncio.QueueFull:
                _LOG.warning("alert stream of user %s fell behind: closed", subscriber.user_id)
                self._close(subscriber)

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await listen(conn, self._channel)
                    self.listening.set()
                    async for notify in conn.notifies():
                        self._publish(notify.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                _LOG.warning("alert stream listener lost the database: %s", exc)
                # What was committed meanwhile is not heard: the clients reconnect with
                # Last-Event-ID and are replayed it.
                for subscriber in list(self._subscribers):
                    self._close(subscriber)
                await asyncio.sleep(RECONNECT_S)
