"""Wires bridge, registry, pipeline and writer into the ``run`` service."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import psycopg

from alerts.incident_desk import IncidentDesk
from alerts.listener import AlertListener
from alerts.notify import MqttAlertPublisher, WebhookSender
from alerts.store import AlertStore
from core.broker_acl import alerts_username, incidents_username
from core.decode import Limits
from core.directory import DeviceDirectory
from core.dispatch_contract import reply_topic
from core.errors import ConfigurationError, ServiceUnavailable
from core.observability import PipelineCounters
from core.settings import Settings
from gateway.bridge import MqttBridge, parse_mqtt_url
from gateway.decoders import Decoders, load_profiles
from gateway.hooks import FaultHooks
from gateway.pipeline import CommittedListener, Pipeline
from gateway.quarantine import Quarantine
from gateway.replies import AlinkReplies
from gateway.source import MessageSource
from gateway.supervisor import HEARTBEAT_S, Supervisor
from ingest.maintenance import MaintenanceTask
from ingest.writer import BatchWriter
from store import schema
from store.conninfo import as_role
from store.device_directory import DirectoryReader, follow_changes
from store.metrics import report_state, save_counters
from store.pools import DatabasePool, PoolWatch

__all__ = [
    "RuleEngine",
    "alert_publisher",
    "limits_from",
    "run_pipeline",
    "tune_gc",
    "tune_threads",
]

_LOG = logging.getLogger(__name__)
# How long start-up waits for the first connection before saying so in the log.
_CONNECT_NOTICE_S = 10.0
# Intake is "caught up" below this many queued messages: only then does silence
# from a device mean it is offline (alerts.listener, absence rules).
_CAUGHT_UP_QUEUE = 2_000


class RuleEngine(CommittedListener, Protocol):
    """The rule engine a worker runs: ``AlertListener``, or a clustered worker's router."""

    @property
    def publisher(self) -> MqttAlertPublisher | None: ...

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None: ...

    def stop(self) -> None: ...


def _worker_name(settings: Settings) -> str:
    return f"{settings.gateway.client_id}@{socket.gethostname()}:{os.getpid()}"


# Allocations between young collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 100_000


def tune_gc() -> None:
    """Collect cycles less often in a pipeline process.

    Intake makes several objects per message that live for one batch (tens of
    milliseconds); with the default threshold they were traversed again and again
    as they were promoted, a third of the intake thread's CPU in the profile. A
    collection every 100k allocations lets a batch die young. Objects from start-up
    (modules, settings, the device directory) are frozen out of collections. No
    memory is held by this: cycles are still collected, only less often."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# How long a thread may hold the GIL while another waits for it (CPython's default 5 ms).
SWITCH_INTERVAL_S = 0.001


def tune_threads() -> None:
    """Hand the GIL over sooner to a thread that waits for it.

    The commit thread gives the GIL up on each round trip to the database and
    must get it back to go on; while intake validates or paho's thread parses,
    it waited up to the switch interval each time: up to 25 ms a batch at five
    round trips, on the path of every message's latency. At 1 ms the waits are
    a fifth, and a switch (a few microseconds) a thousand times a second at most
    costs the CPU-bound threads well under 1 %."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_pipeline(
    settings: Settings,
    stop: threading.Event,
    *,
    listeners: tuple[CommittedListener, ...] = (),
    ready: threading.Event | None = None,
    hard_exit: bool = False,
    counters: PipelineCounters | None = None,
    source: MessageSource | None = None,
    engine: Callable[[DeviceDirectory], RuleEngine] | None = None,
    extra_metrics: Callable[[], dict[str, object]] | None = None,
    pools: PoolWatch | None = None,
) -> None:
    """Run gateway and ingest until ``stop`` is set.

    Raises ``PipelineFailed`` when a pipeline thread ended unexpectedly. With
    ``hard_exit`` (a service process) the process also ends on its own if
    stopping after such a failure hangs. ``counters``, when given, are the ones the
    pipeline counts into (a test watches them to know what was committed). A
    clustered worker (gateway.cluster) passes its AMQP ``source``, the factory of
    its sharded rule ``engine`` (given the process's one device directory) and the
    shard figures for /metrics, and the ``pools`` watch its shards' stores report to;
    ``run`` passes none.
    """
    if settings.database_url is None or (settings.mqtt_url is None and source is None):
        raise ConfigurationError("set SC_DATABASE_URL and SC_MQTT_URL (or use `demo`)")
    schema.upgrade(settings.database_url)  # as the owner, like the storage maintenance
    # Everything else runs as the pipeline's role (migration 0008, docs/security.md).
    url = as_role(settings.database_url, settings.ingest.database_role)
    worker = _worker_name(settings)
    counters = counters if counters is not None else PipelineCounters()
    # Every long-lived database user of the process has a pool of its own (store.pools),
    # opened as the pipeline starts and closed when it stops; what they went through
    # is counted.
    pools = pools if pools is not None else PoolWatch()
    writer = BatchWriter(
        url=url,
        worker=worker,
        dead_payload_bytes=settings.validation.max_payload_bytes,
        watch=pools,
    )

    # One device directory for the gateway and the rule engine, read while the commit
    # thread writes, so over a pool of its own (plain connections, no staging tables).
    reader = DirectoryReader(url, watch=pools)
    directory = reader.directory(miss_refresh_s=settings.ingest.registry_refresh_s)

    def save_metrics(snapshot: dict[str, object]) -> None:
        lost, failed = pools.connections_lost(), pools.reconnect_failures
        counters.set("database_connections_lost_total", lost)
        counters.set("database_reconnect_failures_total", failed)
        figures = {
            **snapshot,
            "database_connections_lost_total": lost,
            "database_reconnect_failures_total": failed,
            **(extra_metrics() if extra_metrics else {}),
        }
        with writer.connection() as conn:
            try:
                with conn.transaction():
                    save_counters(conn, settings.gateway.client_id, datetime.now(UTC), figures)
            except psycopg.OperationalError as exc:
                raise ServiceUnavailable("database", str(exc)) from exc

    report_state, heartbeat_pool = _state_reporter(url, settings.gateway.client_id)
    hooks = FaultHooks(settings.test_hooks)
    if hooks.active:
        _LOG.warning("test hooks are set: %s", settings.test_hooks)
    # Before the broker connects: messages in flight at the last crash are known first.
    quarantine = Quarantine.for_worker(
        settings.data_dir, settings.gateway.client_id, crashes=settings.ingest.poison_crashes
    )
    supervisor = Supervisor(
        stop=stop,
        report=report_state,
        stall_s=settings.ingest.stall_s,
        exit_after_s=settings.ingest.exit_after_s if hard_exit else None,
        on_beat=hooks.on_beat if hooks.active else None,
        # A failure the supervisor sees (a thread's exception, a stall) is logged and
        # is no message's doing: only crashes it cannot see count against messages.
        on_failure=quarantine.close,
    )
    decoders = (
        load_profiles(settings.decoders.profiles) if settings.decoders.profiles else Decoders()
    )
    bridge: MessageSource
    replies = None
    if source is None:
        assert settings.mqtt_url is not None
        mqtt_bridge = MqttBridge(
            url=settings.mqtt_url, settings=settings.gateway, extra_filters=decoders.topic_filters
        )
        if decoders.products and settings.decoders.alink_replies:
            replies = AlinkReplies(mqtt_bridge.publish, counters)
        bridge = mqtt_bridge
    else:
        bridge = source  # a clustered worker: community shards over AMQP
    alert_listener: RuleEngine | None = None
    desk = None
    # The desk talks to responders over MQTT: a clustered worker without SC_MQTT_URL
    # runs none (another process with MQTT does; desks share the work, SKIP LOCKED).
    if settings.alerts.enabled and settings.incidents.enabled and settings.mqtt_url is not None:
        desk = _incident_desk(settings, url)
    if settings.alerts.enabled:
        alert_listener = (
            engine(directory)
            if engine is not None
            else _alert_listener(settings, bridge, url, hooks, directory, pools)
        )
        listeners = (*listeners, alert_listener)
    pipeline = Pipeline(
        bridge=bridge,
        sink=writer,
        registry=directory,
        counters=counters,
        settings=settings.ingest,
        limits=limits_from(settings),
        save_metrics=save_metrics,
        listeners=listeners,
        on_message=hooks.on_message if hooks.active else None,
        quarantine=quarantine,
        decoders=decoders or None,
        on_settled=replies,
    )
    # Day partitions ahead and retention (plain PostgreSQL); a no-op on TimescaleDB.
    # Service threads run inside the supervisor's boundary too: none may end unseen.
    services_stop = threading.Event()
    maintenance = MaintenanceTask(url=settings.database_url).start(
        services_stop, supervisor.start_service, supervisor.beat
    )
    directory_feed = supervisor.start_service(
        "device-directory",
        follow_changes,
        url,
        directory,
        services_stop,
        supervisor.beat,
    )
    # Pools start connecting here, with the services that close them in `finally`.
    writer.open()
    reader.open()
    # Read before the broker delivers: a kept session's backlog arrives at once, and
    # the first batch waited for this read (a quarter of a second at 10,000 devices).
    try:
        directory.refresh()
    except ServiceUnavailable as exc:
        _LOG.warning("device directory not read yet (%s); intake reads it when it can", exc)
    bridge.start()
    supervisor.watch("mqtt-network", bridge.network_alive)
    try:
        if alert_listener is not None:
            alert_listener.start(supervisor.start_service, supervisor.beat)
            if alert_listener.publisher is not None:
                supervisor.watch("alerts-mqtt", alert_listener.publisher.network_alive)
        if desk is not None:
            desk.start(supervisor.start_service, supervisor.beat)
        if not bridge.wait_connected(_CONNECT_NOTICE_S):
            _LOG.warning("not connected to the broker yet (%s); still trying", bridge.last_error)
        if ready is not None:
            ready.set()
        _LOG.info("pipeline %s running", worker)
        pipeline.run(stop, supervisor)
        quarantine.close()  # a clean stop: nothing in flight was a crash's doing
    finally:
        services_stop.set()
        if alert_listener is not None:
            alert_listener.stop()
        if desk is not None:
            desk.stop()
        bridge.stop()
        writer.close()
        heartbeat_pool.close()  # closed by the last report already, unless it never came
        maintenance.join(30)
        directory_feed.join(30)
        reader.close()
        _LOG.info("pipeline %s stopped", worker)


# A heartbeat that cannot be written within this is skipped, not waited for.
_NO_HANG = "-c statement_timeout=5000"


def _state_reporter(url: str, worker: str) -> tuple[Callable[[str, str], None], DatabasePool]:
    """The worker's heartbeat and state, over a pool of its own (returned, for the
    service to close): the heartbeat must not wait behind a batch, and a failed thread
    may hold the writer's connection."""
    pool = DatabasePool(as_role(url, "", options=_NO_HANG), name="heartbeat", autocommit=True)
    lock = threading.Lock()

    def report(state: str, failure: str) -> None:
        with lock:
            try:
                with pool.connection() as conn:
                    report_state(conn, worker, HEARTBEAT_S, state, failure[:500])
            except psycopg.OperationalError as exc:
                raise ServiceUnavailable("database", str(exc)) from exc
            finally:
                if state != "running":  # the last report: the pool's threads end with it
                    pool.close()

    return report, pool


def _incident_desk(settings: Settings, url: str) -> IncidentDesk:
    """Incidents, dispatch and escalation: a thread and an MQTT client of their own, and
    a connection as the pipeline's role (``url``)."""
    assert settings.mqtt_url is not None
    address = parse_mqtt_url(settings.mqtt_url)
    # Client ids are bound to user names: the desk logs in as the pipeline's companion.
    username = address.username
    if username and settings.gateway.bound_client_ids:
        username = incidents_username(username)
    # A worker of one community's topics takes that community's replies only.
    community = settings.gateway.topic_filter.split("/")[1:2]
    replies = reply_topic(community[0] if community else "+", "+")
    return IncidentDesk(
        url=url,
        mqtt_host=address.host,
        mqtt_port=address.port,
        mqtt_username=username,
        mqtt_password=address.password,
        client_id=f"{settings.gateway.client_id}-incidents",
        tick_s=settings.incidents.tick_s,
        private_destinations=settings.alerts.webhook_private_destinations,
        webhook_timeout_s=settings.alerts.webhook_timeout_s,
        reply_filter=replies,
    )


def _alert_listener(
    settings: Settings,
    bridge: MessageSource,
    url: str,
    hooks: FaultHooks,
    directory: DeviceDirectory,
    pools: PoolWatch | None = None,
) -> AlertListener:
    """The rule engine as a listener: its own store connection (``url``: as the pipeline's
    role), MQTT client and webhooks."""
    assert settings.mqtt_url is not None
    alerts = settings.alerts
    publisher = None
    if alerts.mqtt_publish:
        publisher = alert_publisher(settings, settings.mqtt_url, settings.gateway.bound_client_ids)
    return AlertListener(
        store=AlertStore.from_settings(url, settings.gateway.client_id, alerts, pools),
        settings=alerts,
        topic_filter=settings.gateway.topic_filter,
        healthy=lambda: bridge.connected.is_set() and bridge.inbox.qsize() < _CAUGHT_UP_QUEUE,
        publisher=publisher,
        webhooks=WebhookSender.from_settings(url, alerts),
        engine_hook=hooks.on_engine if hooks.active else None,
        limits=limits_from(settings),
        directory=directory,
    )


def alert_publisher(settings: Settings, mqtt_url: str, bound: bool) -> MqttAlertPublisher:
    """The rule engine's MQTT client; ``bound``: client ids are bound to user names, and
    it logs in as the pipeline's alerts companion."""
    address = parse_mqtt_url(mqtt_url)
    username = address.username
    if username and bound:
        username = alerts_username(username)
    return MqttAlertPublisher(
        host=address.host,
        port=address.port,
        username=username,
        password=address.password,
        client_id=f"{settings.gateway.client_id}-alerts",
    )


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_payload_bytes=settings.validation.max_payload_bytes,
        max_future_s=settings.validation.max_future_s,
    )
