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
from typing import TYPE_CHECKING, Any

from alerts.listener import AlertListener, Committed
from alerts.notify import MqttAlertPublisher, WebhookSender
from alerts.visit_check import VisitCheck
from core.directory import DeviceInfo
from core.errors import MessageFailure, RejectedMessage
from core.topics import parse_topic
from gateway.shards import shard_of
from store import readings as readings_store

if TYPE_CHECKING:
    from alerts.listener import _Replayed

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
        self.shard = shard
        self.shards = shards
        self._mine_cache: dict[str, bool] = {}
        super().__init__(**kwargs)
        self.visits = _ShardVisits(self.mine)
        self._shared_publisher = shared_publisher
        self._shared_webhooks = shared_webhooks

    def mine(self, community_id: str) -> bool:
        owned = self._mine_cache.get(community_id)
        if owned is None:
            owned = self._mine_cache[community_id] = (
                shard_of(community_id, self.shards) == self.shard
            )
        return owned

    def _owned(self, info: DeviceInfo) -> bool:
        return self.mine(info.community_id)

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None:
        super().start(spawn, beat)
        self._drop_foreign()

    def _load_rules(self, *, force: bool = False) -> None:
        super()._load_rules(force=force)
        if self.engine.directory:  # at start the directory comes next; start() drops then
            self._drop_foreign()

    def _load_directory(self, *, initial: bool = False) -> None:
        # The process's one directory, kept current by its device feed: a takeover
        # reads the registry again only if nobody has lately, not once per shard.
        self.directory.refresh_if_stale()
        self._sync_directory()
        if initial:
            view = self.engine.directory
            seen = self.store.run(readings_store.last_seen)
            self.state.presence.update({d: t for d, t in seen.items() if d in view})
            down = self.store.run(readings_store.links_down)
            self.state.links_down.update({d: t for d, t in down.items() if d in view})

    def _sync_directory(self) -> None:
        """The engine sees the shard's communities of the shared directory only."""
        if self.directory.version == self._directory_version:
            return
        self._directory_version = self.directory.version
        view = {
            d: i
            for d, i in self.directory.devices().items()
            if i.state != "decommissioned" and self.mine(i.community_id)
        }
        self.engine.directory = view
        self.store.in_maintenance = {d for d, i in view.items() if i.state == "maintenance"}

    def _replayed(self, topic: str, payload: bytes, received_at: datetime) -> _Replayed | None:
        """A replayed dead letter of another shard's community is that shard's to evaluate."""
        try:
            community = parse_topic(topic).community_id
        except RejectedMessage:
            community = None
        if community is not None and not self.mine(community):
            return None
        return super()._replayed(topic, payload, received_at)

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

    def _outlets(self) -> tuple[MqttAlertPublisher | None, WebhookSender | None]:
        """The router's publisher and sender, shared by the worker's shard engines."""
        return self._shared_publisher, self._shared_webhooks


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

    def committed(self, accepted: Sequence[Committed]) -> list[MessageFailure]:
        """Each shard's messages to its engine; the failures of all, as
        ``AlertListener.committed`` returns them (each an ``internal_error`` dead letter)."""
        self._retire()
        groups: dict[int, list[Committed]] = {}
        for item in accepted:
            community = _community_of(item)
            if community is None:
                continue
            groups.setdefault(shard_of(community, self.shards), []).append(item)
        with self._lock:
            engines = dict(self._engines)
        failures: list[MessageFailure] = []
        for shard, items in groups.items():
            engine = engines.get(shard)
            if engine is None:
                # Our consumer session of that shard ended: these were not acked by us
                # or are past the shard's watermark; the new owner evaluates them.
                self.skipped += len(items)
                continue
            failures += engine.committed(items)
        return failures

    def tick(self, now: datetime) -> list[MessageFailure]:
        self._retire()
        with self._lock:
            engines = list(self._engines.values())
        failures: list[MessageFailure] = []
        for engine in engines:
            failures += engine.tick(now)
        return failures

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
