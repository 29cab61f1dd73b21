"""The pipeline: collect a batch, validate it, commit it, then acknowledge it.

Three threads in a row. The intake thread collects and validates batch N+1
while the commit thread writes batch N, so Python work and database work
overlap; the listener thread then tells the rule engine what was committed,
without holding up the next commit. Small bounded hand-offs between them keep
the order and bound memory. The
broker's flow control (MQTT 5 receive maximum) bounds what is in flight, since
nothing is acknowledged before it is committed: when the database is slow or
down, intake pauses at the broker and nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from core.decode import Limits, decode
from core.errors import RejectedMessage, RejectReason, ServiceUnavailable
from core.observability import PipelineCounters
from core.settings import IngestSettings
from core.topics import parse_topic
from gateway.boundary import dead_letter, internal_error
from gateway.bridge import InboundMessage, MqttBridge
from gateway.dedupe import SeqWindow
from gateway.quarantine import Quarantine
from gateway.registry import Registry
from gateway.supervisor import Supervisor
from ingest.batch import Accepted, Batch, DeadLetter, WriteResult

__all__ = ["BatchSink", "CommittedListener", "Pipeline", "accept"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")
# How often counters are saved for the API's /metrics.
METRICS_EVERY_S = 5.0
# How often listeners get a tick without traffic (timers such as absence rules).
TICK_EVERY_S = 0.25
# Committed batches waiting for the listeners; past it the commit thread waits,
# so a slow rule engine slows intake instead of growing memory.
LISTENER_BACKLOG = 4
# Intake polls rather than waking per message: a wake-up per message costs more
# CPU than the message itself at high rates, and 2 ms is nothing next to a batch.
_POLL_S = 0.002
# Idle wake-up: how quickly a stop request is noticed when no messages come.
_IDLE_S = 0.1


class BatchSink(Protocol):
    def write(self, batch: Batch) -> WriteResult: ...


class CommittedListener(Protocol):
    """Told what was committed and how time passes, after the acknowledgement.

    The rule engine hooks in here; both calls come from one thread (the listener
    thread), in commit order.
    """

    def committed(self, accepted: Sequence[Accepted]) -> None: ...

    def tick(self, now: datetime) -> None: ...


@dataclass(slots=True)
class _Validated:
    messages: list[InboundMessage]
    batch: Batch
    duplicates: int
    journal: Path | None = None  # the quarantine's record of this batch in flight


def accept(
    topic_name: str, payload: bytes, received_at: datetime, registry: Registry, limits: Limits
) -> Accepted:
    """One message's way in (topic, registry, payload); ``RejectedMessage`` if refused.

    The pipeline's path, and a dead letter's replay."""
    topic = parse_topic(topic_name)
    registry.check(topic)
    decoded = decode(topic, payload, received_at, limits)
    return Accepted(
        device_id=topic.device_id,
        topic=topic_name,
        payload=payload,
        readings=decoded.readings,
        event=decoded.event,
        status=decoded.status,
        device_time=decoded.device_time,
        received_at=received_at,
        seq=decoded.seq,
    )


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
        on_message: Callable[[InboundMessage], None] | None = None,
        quarantine: Quarantine | None = None,
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
        self._handoff: queue.Queue[_Validated | None] = queue.Queue(maxsize=1)
        self._to_listeners: queue.Queue[Sequence[Accepted] | None] = queue.Queue(
            maxsize=LISTENER_BACKLOG
        )
        self._metrics_saved = 0.0
        self._ticked = 0.0
        # Test hooks (gateway.hooks): called with each message before it is validated.
        self._on_message = on_message
        self._quarantine = quarantine
        self._beat: Callable[[str], None] = lambda _name: None
        self._supervisor: Supervisor | None = None

    # -- threads -------------------------------------------------------------

    def run(self, stop: threading.Event, supervisor: Supervisor | None = None) -> None:
        """Run until ``stop`` is set; what is committed by then is acknowledged.

        Raises ``PipelineFailed`` when one of its threads ended unexpectedly.
        """
        supervisor = supervisor or Supervisor(stop=stop)
        self._supervisor = supervisor
        self._beat = supervisor.beat
        notifier = supervisor.start("listeners", self._listener_loop)
        committer = supervisor.start("commit", self._commit_loop, stop)
        intake = supervisor.start("intake", self._intake_loop, stop)
        heartbeat = supervisor.start("heartbeat", supervisor.heartbeat_loop)
        while not stop.wait(_IDLE_S * 5):
            pass
        intake.join()
        self._put(None, committer)
        committer.join()
        # After everything committed was handed over.
        _put_while_alive(self._to_listeners, None, notifier)
        notifier.join()
        heartbeat.join()
        supervisor.finished()

    def _put(self, item: _Validated | None, committer: threading.Thread) -> None:
        _put_while_alive(self._handoff, item, committer)

    def _intake_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._beat("intake")
            messages = self._collect(stop)
            if not messages:
                continue
            self.counters.add("messages_received_total", len(messages))
            if self._quarantine is None:
                if not self._intake_batch(messages, [], stop):
                    return
                continue
            poison, clean, suspects = self._quarantine.sort(messages)
            if (clean or poison) and not self._intake_batch(clean, poison, stop):
                return
            for suspect in suspects:
                # Alone in the pipeline: if it crashes us again, the journal names it only.
                self._wait_idle(stop)
                if not self._intake_batch([suspect], [], stop):
                    return
                self._wait_idle(stop)

    def _wait_idle(self, stop: threading.Event) -> None:
        """Until every journaled batch is acknowledged."""
        assert self._quarantine is not None
        while self._quarantine.in_flight() and not stop.is_set():
            self._beat("intake")
            time.sleep(_POLL_S)

    def _intake_batch(
        self, messages: list[InboundMessage], poison: list[InboundMessage], stop: threading.Event
    ) -> bool:
        """Validate one batch and hand it to the commit thread; False when stopping."""
        journal = None
        if self._quarantine is not None:
            journal = self._quarantine.begin(messages)  # before anything is decoded
        batch = self._retrying(partial(self._validate, messages), stop)
        if batch is None:
            return False
        batch.dead_letters += [self._poison(m) for m in poison]
        kept, duplicates = self._dedupe(batch)
        item = _Validated([*messages, *poison], kept, duplicates, journal)
        while not stop.is_set():
            self._beat("intake")
            try:
                self._handoff.put(item, timeout=_IDLE_S)
            except queue.Full:
                continue
            else:
                return True
        return False

    def _poison(self, message: InboundMessage) -> DeadLetter:
        assert self._quarantine is not None
        return dead_letter(
            message.topic,
            message.payload,
            RejectReason.POISON.value,
            f"in flight during {self._quarantine.crashes} crashes in a row; not decoded again",
            datetime.fromtimestamp(message.received_at, UTC),
        )

    def _commit_loop(self, stop: threading.Event) -> None:
        while True:
            self._beat("commit")
            try:
                item = self._handoff.get(timeout=_IDLE_S)
            except queue.Empty:
                self._housekeeping()
                if stop.is_set():
                    break
                continue
            if item is None:
                break
            self._commit(item, stop)
            self._housekeeping()
        self._housekeeping(force_metrics=True)  # the last counters outlive the process

    # -- intake --------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[InboundMessage]:
        inbox = self.bridge.inbox
        batch: list[InboundMessage] = []
        limit = self.settings.batch_size
        deadline = time.monotonic() + _IDLE_S
        flush_after = self.settings.flush_interval_ms / 1000
        while len(batch) < limit and not stop.is_set():
            try:
                while len(batch) < limit:
                    batch.append(inbox.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            if len(batch) == 1 and deadline - now > flush_after:
                deadline = now + flush_after  # the first message starts the flush clock
            if now >= deadline or len(batch) >= limit:
                break
            time.sleep(_POLL_S)
        self.counters.set("queue_depth", inbox.qsize())
        return batch

    def _validate(self, messages: list[InboundMessage]) -> Batch:
        """Split messages into accepted content and dead letters.

        Raises ``ServiceUnavailable`` when the registry cannot be read; the caller
        retries, so a known device is never refused because of an outage.
        """
        self.registry.refresh_if_stale()
        batch = Batch()
        for message in messages:
            received_at = datetime.fromtimestamp(message.received_at, UTC)
            # The per-message boundary: whatever this message makes us raise ends
            # as its dead letter; only an outage (ServiceUnavailable) stops the batch.
            try:
                batch.accepted.append(self._accept(message, received_at))
            except RejectedMessage as exc:
                batch.dead_letters.append(
                    dead_letter(
                        message.topic, message.payload, exc.reason.value, exc.detail, received_at
                    )
                )
            except ServiceUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - the boundary; the cause is in the dead letter
                batch.dead_letters.append(
                    internal_error(message.topic, message.payload, received_at, exc, "validation")
                )
        return batch

    def _accept(self, message: InboundMessage, received_at: datetime) -> Accepted:
        if self._on_message is not None:
            self._on_message(message)
        return accept(message.topic, message.payload, received_at, self.registry, self.limits)

    def _dedupe(self, batch: Batch) -> tuple[Batch, int]:
        """Drop recent resends (same device and seq). Runs once per batch, after
        validation succeeded, so a retried batch is not mistaken for its own resend."""
        kept: list[Accepted] = []
        dead = list(batch.dead_letters)
        for item in batch.accepted:
            try:
                duplicate = item.device_time is not None and self._window.is_duplicate(
                    item.device_id, item.seq, item.device_time
                )
            except Exception as exc:  # noqa: BLE001 - the per-message boundary, as in _validate
                received_at = item.received_at or datetime.now(UTC)
                dead.append(internal_error(item.topic, item.payload, received_at, exc, "dedupe"))
                continue
            if not duplicate:
                kept.append(item)
        duplicates = len(batch.accepted) - len(kept) - (len(dead) - len(batch.dead_letters))
        return Batch(kept, dead), duplicates

    # -- commit --------------------------------------------------------------

    def _commit(self, item: _Validated, stop: threading.Event) -> None:
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize() + len(item.messages))
        started = time.perf_counter()
        result = self._retrying(partial(self.sink.write, item.batch), stop)
        if result is None:
            return  # stopping during an outage: not acked, the broker keeps it all
        self.counters.committed(messages=len(item.messages), seconds=time.perf_counter() - started)
        self._count(item.batch, result, item.duplicates)
        self.bridge.ack(item.messages)
        if item.journal is not None and self._quarantine is not None:
            self._quarantine.end(item.journal, item.messages)
        if self.listeners:
            self._to_listeners_put(item.batch.accepted)

    def _to_listeners_put(self, accepted: Sequence[Accepted]) -> None:
        """Wait for room (a slow rule engine slows commits) unless the pipeline failed."""
        while self._supervisor is None or self._supervisor.failure is None:
            self._beat("commit")
            try:
                self._to_listeners.put(accepted, timeout=_IDLE_S)
            except queue.Full:
                continue
            else:
                return

    def _retrying(self, step: Callable[[], _T], stop: threading.Event) -> _T | None:
        """Run ``step`` until the database answers; None if asked to stop first."""
        delay = self.settings.retry_min_s
        while True:
            self._beat(threading.current_thread().name)
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

    def _listener_loop(self) -> None:
        while True:
            self._beat("listeners")
            try:
                accepted = self._to_listeners.get(timeout=TICK_EVERY_S)
            except queue.Empty:
                accepted = ()
            if accepted is None:
                return
            try:
                self._notify(accepted)
            except Exception:  # noqa: BLE001 - the thread's boundary: a listener bug must not stall commits
                _LOG.exception("a listener failed; it keeps getting later batches")

    def _notify(self, accepted: Sequence[Accepted]) -> None:
        if accepted:
            for listener in self.listeners:
                listener.committed(accepted)
        now = time.monotonic()
        if now - self._ticked >= TICK_EVERY_S:
            self._ticked = now
            wall = datetime.now(UTC)
            for listener in self.listeners:
                listener.tick(wall)

    def _housekeeping(self, *, force_metrics: bool = False) -> None:
        now = time.monotonic()
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize() + self._handoff.qsize())
        if self._save_metrics is None:
            return
        if not force_metrics and now - self._metrics_saved < METRICS_EVERY_S:
            return
        self._metrics_saved = now
        self.counters.set("reconnects_total", self.bridge.reconnects)
        try:
            self._save_metrics(self.counters.snapshot())
        except ServiceUnavailable as exc:
            _LOG.debug("metrics not saved: %s", exc)


def _put_while_alive(into: queue.Queue[_T], item: _T, consumer: threading.Thread) -> None:
    """Hand over unless the consumer is gone (it failed: nobody would ever take it)."""
    while consumer.is_alive():
        try:
            into.put(item, timeout=_IDLE_S)
        except queue.Full:
            continue
        else:
            return
