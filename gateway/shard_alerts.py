"""The rule engine of a clustered worker: one engine per shard the worker is active on.

Each shard's engine is an ``AlertListener`` restricted to the communities of
that shard, whose progress (the replay watermark) is kept under the shard's
name rather than the worker's. Taking a shard over is then exactly the restart
path: seed and load rules, load the directory, restore persisted state and
active alerts, rebuild rate windows from stored readings, re-evaluate the
device events received since the shard's watermark (whoever wrote them), and
only then evaluate what the new owner commits. Alerts raised twice (by the old
and the new owner, or by a redelivered batch) meet the database's keys: the
active-alert index and the episode key of migration 0013.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from alerts import catalog
from alerts.model import DeviceInfo
from alerts.notify import MqttAlertPublisher, WebhookSender
from alerts.service import DIRECTORY_REFRESH_S, AlertListener, Committed
from alerts.store import Notice
from alerts.visit_check import VisitCheck
from core.errors import RejectedMessage
from core.topics import parse_topic
from gateway.shards import shard_of

__all__ = ["ShardAlertListener", "ShardRouter"]

_LOG = logging.getLogger(__name__)


class _ShardVisits(VisitCheck):
    def __init__(self, mine: Callable[[str], bool]) -> None:
        super().__init__()
        self._mine = mine

    def _owned(self, community_id: str) -> bool:
        return self._mine(community_id)


class ShardAlertListener(AlertListener):
    """An ``AlertListener`` that owns the communities of one shard only."""

    def __init__(
        self,
        *,
        shard: int,
        shards: int,
        shared_publisher: MqttAlertPublisher | None = None,
        shared_webhooks: WebhookSender | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.shards = shards
        self.visits = _ShardVisits(self.mine)
        self._shared_publisher = shared_publisher
        self._shared_webhooks = shared_webhooks

    def mine(self, community_id: str) -> bool:
        return shard_of(community_id, self.shards) == self.shard

    def _owned(self, info: DeviceInfo) -> bool:
        return self.mine(info.community_id)

    def start(self) -> None:
        super().start()
        self._drop_foreign()

    def _load_rules(self, *, force: bool = False) -> None:
        super()._load_rules(force=force)
        if self.engine.directory:  # at start the directory comes next; start() drops then
            self._drop_foreign()

    def _load_directory(self, *, initial: bool = False) -> None:
        directory, seen = self.store.run(catalog.load_directory)
        directory = {d: i for d, i in directory.items() if self.mine(i.community_id)}
        self.engine.directory = directory
        self.store.in_maintenance = {d for d, i in directory.items() if i.state == "maintenance"}
        if initial:
            self.state.presence.update({d: t for d, t in seen.items() if d in directory})
            down = self.store.run(catalog.links_down)
            self.state.links_down.update({d: t for d, t in down.items() if d in directory})
        self._due["directory"] = time.monotonic() + DIRECTORY_REFRESH_S

    def _subject_mine(self, subject: str) -> bool:
        kind, _, rest = subject.partition(":")
        if kind == "device":
            return rest in self.engine.directory
        if kind in ("building", "community"):
            return self.mine(rest.split("/", 1)[0])
        return True  # not a community's subject (none today): leave it

    def _drop_foreign(self) -> None:
        """Persisted state and active alerts of other shards' communities are theirs."""
        for rs in self.state.rules.values():
            for subject in [s for s in rs.entries if not self._subject_mine(s)]:
                rs.entries.pop(subject, None)
                rs.dirty.discard(subject)
                rs.removed.discard(subject)

    def _publish(self, notices: list[Notice]) -> None:
        if not notices:
            return
        if self._shared_publisher is not None:
            self._shared_publisher.publish(notices)
        if self._shared_webhooks is not None and any(n.notify for n in notices):
            self._shared_webhooks.wake()


class ShardRouter:
    """A ``CommittedListener`` that hands each committed message to its shard's engine.

    ``activate`` and ``deactivate`` come from the AMQP thread; the engines are
    used, and retired ones stopped, only on the pipeline's listener thread.
    """

    def __init__(self, factory: Callable[[int], ShardAlertListener], shards: int) -> None:
        self._factory = factory
        self.shards = shards
        self._engines: dict[int, ShardAlertListener] = {}
        self._retired: list[ShardAlertListener] = []
        self._lock = threading.Lock()
        self.skipped = 0  # committed messages of a shard this worker no longer owns
        self.rebuilds = 0
        self.rebuild_seconds = 0.0

    def activate(self, shard: int) -> None:
        """Rebuild the shard's rule state from PostgreSQL (the restart path)."""
        started = time.perf_counter()
        engine = self._factory(shard)
        engine.start()
        with self._lock:
            old = self._engines.get(shard)
            self._engines[shard] = engine
            if old is not None:
                self._retired.append(old)
            self.rebuilds += 1
            self.rebuild_seconds = time.perf_counter() - started
        _LOG.info("shard %d: rule state rebuilt in %.2fs", shard, self.rebuild_seconds)

    def deactivate(self, shard: int) -> None:
        with self._lock:
            old = self._engines.pop(shard, None)
            if old is not None:
                self._retired.append(old)

    def _retire(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for engine in retired:
            engine.stop()

    def committed(self, accepted: Sequence[Committed]) -> None:
        self._retire()
        groups: dict[int, list[Committed]] = {}
        for item in accepted:
            community = _community_of(item)
            if community is None:
                continue
            groups.setdefault(shard_of(community, self.shards), []).append(item)
        with self._lock:
            engines = dict(self._engines)
        for shard, items in groups.items():
            engine = engines.get(shard)
            if engine is None:
                # Our consumer session of that shard ended: these were not acked by us
                # or are past the shard's watermark; the new owner evaluates them.
                self.skipped += len(items)
                continue
            engine.committed(items)

    def tick(self, now: datetime) -> None:
        self._retire()
        with self._lock:
            engines = list(self._engines.values())
        for engine in engines:
            engine.tick(now)

    def stop(self) -> None:
        with self._lock:
            engines = [*self._engines.values(), *self._retired]
            self._engines.clear()
            self._retired.clear()
        for engine in engines:
            engine.stop()

    @property
    def active(self) -> list[int]:
        with self._lock:
            return sorted(self._engines)


def _community_of(item: Committed) -> str | None:
    topic = getattr(item, "topic", None)
    if not isinstance(topic, str):
        return None
    try:
        return parse_topic(topic).community_id
    except RejectedMessage:
        return None
