"""The commit confirmation: waits until the pipeline has stored given rows.

The pipeline acknowledges a message to the broker only after its commit, but the
broker's PUBACK to the bridge means only that the broker has it. So before a
frame is confirmed to its UITD, the rows its messages become (each one's natural
key) are looked up in the database. One task asks for every waiting key at once,
every ``poll_s``: with a thousand UITDs that is one query, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from core.errors import ServiceUnavailable
from firebridge.mapping import CommitKey
from firebridge.store import BridgeStore

__all__ = ["CommitWatcher"]

_LOG = logging.getLogger(__name__)
# Keys asked for per query; the rest wait for the next round.
_BATCH = 5_000


class CommitWatcher:
    def __init__(self, store: BridgeStore, *, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self._waiting: dict[CommitKey, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self.polls = 0

    async def wait(self, keys: Sequence[CommitKey], limit_s: float) -> bool:
        """True once every key's row is stored; False if ``limit_s`` passes first."""
        if not keys:
            return True
        loop = asyncio.get_running_loop()
        futures = []
        for key in set(keys):
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(key, []).append(future)
            futures.append(future)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.gather(*futures), limit_s)
        except TimeoutError:
            return False
        finally:
            for key in set(keys):
                left = [f for f in self._waiting.get(key, ()) if not f.done()]
                if left:
                    self._waiting[key] = left
                else:
                    self._waiting.pop(key, None)
        return True

    async def run(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.poll_s)
            keys = list(self._waiting)[:_BATCH]
            if not keys:
                continue
            try:
                found = await self.store.committed(keys)
            except ServiceUnavailable as exc:
                _LOG.warning("commit check failed (%s); frames wait", exc.detail)
                await asyncio.sleep(min(1.0, self.poll_s * 50))
                continue
            self.polls += 1
            for index in found:
                for future in self._waiting.pop(keys[index], ()):
                    if not future.done():
                        future.set_result(None)
