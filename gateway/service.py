"""Wires bridge, registry, pipeline and writer into the ``run`` service."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from core import schema
from core.decode import Limits
from core.errors import ConfigurationError, ServiceUnavailable
from core.observability import PipelineCounters
from core.settings import Settings
from gateway.bridge import MqttBridge
from gateway.pipeline import CommittedListener, Pipeline
from gateway.registry import DeviceInfo, Registry, load_devices
from ingest.maintenance import MaintenanceTask
from ingest.writer import BatchWriter

__all__ = ["run_pipeline"]

_LOG = logging.getLogger(__name__)
# How long start-up waits for the first connection before saying so in the log.
_CONNECT_NOTICE_S = 10.0


def _worker_name(settings: Settings) -> str:
    return f"{settings.gateway.client_id}@{socket.gethostname()}:{os.getpid()}"


def run_pipeline(
    settings: Settings,
    stop: threading.Event,
    *,
    listeners: tuple[CommittedListener, ...] = (),
    ready: threading.Event | None = None,
) -> None:
    """Run gateway and ingest until ``stop`` is set."""
    if settings.database_url is None or settings.mqtt_url is None:
        raise ConfigurationError("set SC_DATABASE_URL and SC_MQTT_URL (or use `demo`)")
    schema.upgrade(settings.database_url)
    worker = _worker_name(settings)
    writer = BatchWriter(url=settings.database_url, worker=worker)
    counters = PipelineCounters()

    # The registry is read on the intake thread while the commit thread writes, so
    # it has a connection of its own.
    reader = BatchWriter(url=settings.database_url, worker=worker)

    def load() -> dict[str, DeviceInfo]:
        try:
            return load_devices(reader.connection())
        except psycopg.OperationalError as exc:
            reader.close()
            raise ServiceUnavailable("database", str(exc)) from exc

    def save_metrics(snapshot: dict[str, object]) -> None:
        try:
            conn = writer.connection()
            with conn.transaction():
                conn.execute(
                    "INSERT INTO pipeline_metrics (worker, updated_at, counters)"
                    " VALUES (%s, %s, %s)"
                    " ON CONFLICT (worker) DO UPDATE"
                    " SET updated_at = excluded.updated_at, counters = excluded.counters",
                    (settings.gateway.client_id, datetime.now(UTC), Jsonb(snapshot)),
                )
        except psycopg.OperationalError as exc:
            writer.close()
            raise ServiceUnavailable("database", str(exc)) from exc

    registry = Registry(loader=load, miss_refresh_s=settings.ingest.registry_refresh_s)
    bridge = MqttBridge(url=settings.mqtt_url, settings=settings.gateway)
    pipeline = Pipeline(
        bridge=bridge,
        sink=writer,
        registry=registry,
        counters=counters,
        settings=settings.ingest,
        limits=Limits(
            max_payload_bytes=settings.validation.max_payload_bytes,
            max_future_s=settings.validation.max_future_s,
        ),
        save_metrics=save_metrics,
        listeners=listeners,
    )
    # Day partitions ahead and retention (plain PostgreSQL); a no-op on TimescaleDB.
    maintenance_stop = threading.Event()
    maintenance = MaintenanceTask(url=settings.database_url).start(maintenance_stop)
    bridge.start()
    try:
        if not bridge.wait_connected(_CONNECT_NOTICE_S):
            _LOG.warning("not connected to the broker yet (%s); still trying", bridge.last_error)
        if ready is not None:
            ready.set()
        _LOG.info("pipeline %s running", worker)
        pipeline.run(stop)
    finally:
        maintenance_stop.set()
        bridge.stop()
        writer.close()
        reader.close()
        maintenance.join(30)
        _LOG.info("pipeline %s stopped", worker)
