"""A clustered pipeline worker (``smartcommunity worker``): AMQP shards in, same pipeline.

Wires ``AmqpSource`` (the community-shard queues of a RabbitMQ cluster) and
``ShardRouter`` (one rule engine per shard this worker is active on) into
``run_pipeline``: validation, storage, acknowledgement after commit and the
rule engine are the single-machine code. docs/scale-out.md has the topology.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from alerts.notify import MqttAlertPublisher, WebhookSender
from alerts.store import AlertStore
from core.directory import DeviceDirectory
from core.errors import ConfigurationError
from core.settings import Settings
from gateway.amqp_source import AmqpSource
from gateway.process import alert_publisher, limits_from, run_pipeline
from gateway.shard_alerts import ShardAlertListener, ShardRouter
from gateway.shards import queue_name
from store import metrics, places
from store.conninfo import as_role
from store.pools import PoolWatch

__all__ = ["run_cluster_worker"]

_LOG = logging.getLogger(__name__)
# As in gateway.process: below this many queued messages intake is caught up.
_CAUGHT_UP_QUEUE = 2_000


def _community_reader(url: str) -> Callable[[], list[str]]:
    def read() -> list[str]:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return places.community_ids(conn)

    return read


def _member_counter(url: str) -> Callable[[], int]:
    """Clustered workers alive: a recent heartbeat and shard figures in their counters."""

    def count() -> int:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            return metrics.clustered_workers(conn)

    return count


class _Router(ShardRouter):
    """The router plus the publisher and webhook sender its shard engines share."""

    def __init__(
        self,
        factory: Callable[[int], ShardAlertListener],
        shards: int,
        publisher: MqttAlertPublisher | None,
        webhooks: WebhookSender | None,
    ) -> None:
        super().__init__(factory, shards)
        self.publisher = publisher
        self.webhooks = webhooks

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None:
        """Shard engines start on takeover (``activate``); the shared senders now,
        the webhook thread under the pipeline's supervisor (``spawn``, ``beat``)."""
        if self.publisher is not None:
            self.publisher.start()
        if self.webhooks is not None:
            self.webhooks.start(spawn, beat)

    def stop(self) -> None:
        super().stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self.webhooks is not None:
            self.webhooks.stop()


def run_cluster_worker(
    settings: Settings,
    stop: threading.Event,
    *,
    ready: threading.Event | None = None,
    hard_exit: bool = False,
) -> None:
    if settings.database_url is None:
        raise ConfigurationError("set SC_DATABASE_URL")
    if not settings.cluster.urls:
        raise ConfigurationError("set SC_CLUSTER__AMQP_URLS (comma-separated amqp:// URLs)")
    # As the pipeline's role, like run_pipeline's own connections (docs/security.md).
    url = as_role(settings.database_url, settings.ingest.database_role)
    cluster = settings.cluster
    alerts = settings.alerts
    holder: list[AmqpSource] = []
    pools = PoolWatch()  # the shards' alert stores count into the worker's figures
    # The process's one device directory, made by run_pipeline before the engine.
    directories: list[DeviceDirectory] = []
    limits = limits_from(settings)

    def healthy() -> bool:
        source = holder[0]
        return source.connected.is_set() and source.inbox.qsize() < _CAUGHT_UP_QUEUE

    def engine_for(shard: int) -> ShardAlertListener:
        return ShardAlertListener(
            shard=shard,
            shards=cluster.shards,
            shared_publisher=router.publisher,
            shared_webhooks=router.webhooks,
            # The replay watermark belongs to the shard, not to the worker: whoever
            # takes the shard over re-evaluates what its last owner had not.
            store=AlertStore.from_settings(
                url, queue_name(cluster.queue_prefix, shard), alerts, pools
            ),
            settings=alerts,
            healthy=healthy,
            limits=limits,
            directory=directories[0],
        )

    publisher = None
    if alerts.mqtt_publish and settings.mqtt_url is not None:
        publisher = alert_publisher(settings, settings.mqtt_url, bound=False)
    router = _Router(
        engine_for, cluster.shards, publisher, WebhookSender.from_settings(url, alerts)
    )

    def make_engine(directory: DeviceDirectory) -> _Router:
        directories.append(directory)
        return router

    engine = make_engine if alerts.enabled else None
    source = AmqpSource(
        settings=cluster,
        communities=_community_reader(url),
        on_activate=router.activate if engine else lambda _s: None,
        on_deactivate=router.deactivate if engine else lambda _s: None,
        members=_member_counter(url),
    )
    holder.append(source)

    def extra() -> dict[str, object]:
        return {
            **source.snapshot(),
            "shard_rebuilds_total": router.rebuilds,
            "shard_rebuild_seconds": router.rebuild_seconds,
            "engine_skipped_total": router.skipped,
        }

    run_pipeline(
        settings,
        stop,
        ready=ready,
        hard_exit=hard_exit,
        source=source,
        engine=engine,
        extra_metrics=extra,
        pools=pools,
    )
