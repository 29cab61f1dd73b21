"""The pipeline loop: collect a batch, validate, commit, then acknowledge.

Runs on one thread. The broker's flow control (MQTT 5 receive maximum) bounds
what is in flight, since nothing is acknowledged before it is committed: when
the database is slow or down, intake pauses at the broker, nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from core.decode import Limits, decode
from core.errors import RejectedMessage, ServiceUnavailable
from core.observability import PipelineCounters
from core.settings import IngestSettings
from core.topics import parse_topic
from gateway.bridge import InboundMessage, MqttBridge
from gateway.dedupe import SeqWindow
from gateway.registry import Registry
from ingest.batch import Accepted, Batch, DeadLetter, WriteResult

__all__ = ["BatchSink", "CommittedListener", "Pipeline"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")
# How often counters are saved for the API's /metrics.
METRICS_EVERY_S = 5.0
# Idle wake-up: how quickly a stop request is noticed when no messages come.
_IDLE_POLL_S = 0.5


class BatchSink(Protocol):
    def write(self, batch: Batch) -> WriteResult: ...


class CommittedListener(Protocol):
    """Told about what was committed (the rule engine hooks in here)."""

    def committed(self, accepted: Sequence[Accepted]) -> None: ...


class Pipeline:
    def __init__(
        self,
        *,
        bridge: MqttBridge,
        sink: BatchSink,
        registry: Registry,
        counters: PipelineCounters,
        settings: IngestSettings,
        limits: Limits,
        save_metrics: Callable[[dict[str, object]], None] | None = None,
        listeners: Sequence[CommittedListener] = (),
    ) -> None:
        self.bridge = bridge
        self.sink = sink
        self.registry = registry
        self.counters = counters
        self.settings = settings
        self.limits = limits
        self.listeners = listeners
        self._save_metrics = save_metrics
        self._window = SeqWindow()
        self._metrics_saved = 0.0

    # -- loop -------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            messages = self._collect(stop)
            if messages:
                self._handle(messages, stop)
            self._maybe_save_metrics()

    def _collect(self, stop: threading.Event) -> list[InboundMessage]:
        inbox = self.bridge.inbox
        try:
            first = inbox.get(timeout=_IDLE_POLL_S)
        except queue.Empty:
            return []
        batch = [first]
        limit = self.settings.batch_size
        deadline = time.monotonic() + self.settings.flush_interval_ms / 1000
        while len(batch) < limit and not stop.is_set():
            try:
                batch.append(inbox.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _handle(self, messages: list[InboundMessage], stop: threading.Event) -> None:
        self.counters.add("messages_received_total", len(messages))
        self.counters.set("queue_depth", self.bridge.inbox.qsize())
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize() + len(messages))
        batch = self._retrying(lambda: self._validate(messages), stop)
        if batch is None:
            return
        batch, duplicates = self._dedupe(batch)
        started = time.perf_counter()
        result = self._retrying(lambda: self.sink.write(batch), stop)
        if result is None:
            return
        elapsed = time.perf_counter() - started
        self.counters.committed(messages=len(messages), seconds=elapsed)
        self._count(batch, result, duplicates)
        self.bridge.ack(messages)
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize())
        for listener in self.listeners:
            listener.committed(batch.accepted)

    def _retrying(self, step: Callable[[], _T], stop: threading.Event) -> _T | None:
        """Run ``step`` until the database answers; None if asked to stop first."""
        delay = self.settings.retry_min_s
        while True:
            try:
                return step()
            except ServiceUnavailable as exc:
                self.counters.add("database_errors_total")
                if stop.is_set():
                    _LOG.warning("stopping with uncommitted messages; the broker keeps them")
                    return None
                _LOG.warning("database unavailable, retrying in %.1fs: %s", delay, exc.detail)
                stop.wait(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def _count(self, batch: Batch, result: WriteResult, duplicates: int) -> None:
        refused = len(result.dead_letters) - len(batch.dead_letters)
        self.counters.add("messages_accepted_total", len(batch.accepted) - refused)
        self.counters.add("messages_duplicate_total", duplicates + result.rows_duplicate)
        self.counters.add("rows_written_total", result.rows_written)
        self.counters.add("events_written_total", result.events_written)
        for dead in result.dead_letters:
            self.counters.reject(dead.reason)

    # -- validation ---------------------------------------------------------

    def _validate(self, messages: list[InboundMessage]) -> Batch:
        """Split messages into accepted content and dead letters.

        Raises ``ServiceUnavailable`` when the registry cannot be read; the caller
        retries, so a known device is never refused because of an outage.
        """
        self.registry.refresh_if_stale()
        batch = Batch()
        for message in messages:
            received_at = datetime.fromtimestamp(message.received_at, UTC)
            try:
                topic = parse_topic(message.topic)
                self.registry.check(topic)
                decoded = decode(topic, message.payload, received_at, self.limits)
            except RejectedMessage as exc:
                batch.dead_letters.append(
                    DeadLetter(
                        message.topic, message.payload, exc.reason.value, exc.detail, received_at
                    )
                )
                continue
            batch.accepted.append(
                Accepted(
                    device_id=topic.device_id,
                    topic=message.topic,
                    payload=message.payload,
                    readings=decoded.readings,
                    event=decoded.event,
                    status=decoded.status,
                    device_time=decoded.device_time,
                    received_at=received_at,
                    seq=decoded.seq,
                )
            )
        return batch

    def _dedupe(self, batch: Batch) -> tuple[Batch, int]:
        """Drop recent resends (same device and seq). Runs once per batch, after
        validation succeeded, so a retried batch is not mistaken for its own resend."""
        kept: list[Accepted] = []
        for item in batch.accepted:
            if item.device_time is not None and self._window.is_duplicate(
                item.device_id, item.seq, item.device_time
            ):
                continue
            kept.append(item)
        duplicates = len(batch.accepted) - len(kept)
        return Batch(kept, batch.dead_letters), duplicates

    def _maybe_save_metrics(self) -> None:
        now = time.monotonic()
        if self._save_metrics is None or now - self._metrics_saved < METRICS_EVERY_S:
            return
        self._metrics_saved = now
        self.counters.set("queue_depth", self.bridge.inbox.qsize())
        self.counters.set("reconnects_total", self.bridge.reconnects)
        try:
            self._save_metrics(self.counters.snapshot())
        except ServiceUnavailable as exc:
            _LOG.debug("metrics not saved: %s", exc)
