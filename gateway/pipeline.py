"""The pipeline: collect a batch, validate it, commit it, then acknowledge it.

Three threads in a row. The intake thread collects and validates what arrives
while the commit thread writes the batch before, so Python work and database
work overlap; the listener thread then tells the rule engine what was committed.

Batching is group commit, not a timer: intake validates whatever has arrived
as it arrives, and the commit thread, as soon as it is free, takes everything
validated since its last commit as one batch (``_Ready``). At a low rate a batch
is one message written within milliseconds; at a high rate batches grow by
themselves while the previous one commits. A message waits for at most the
commit in progress and its own, never behind a queue of batches formed earlier:
with one batch queued and one more in intake's hands, the earlier hand-off made
a message at 2,000 msgs/s wait for three commits (bench/latency.py).

The broker's flow control (MQTT 5 receive maximum) bounds what is in flight,
since nothing is acknowledged before it is committed: when the database is slow
or down, intake pauses at the broker and nothing is dropped.

The rule engine never sets the pace of commits: committed batches queue for
it (bounded by ``IngestSettings.engine_backlog`` messages, for memory), and it
evaluates everything queued in one call, so a storm of alert transitions makes
it fall behind and catch up in bigger steps instead of stalling ingest. Its lag
is exported (``engine_lag_messages``, ``engine_lag_seconds``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from core.decode import Limits, decode
from core.directory import DeviceDirectory
from core.errors import MessageFailure, RejectedMessage, RejectReason, ServiceUnavailable
from core.observability import PipelineCounters
from core.settings import IngestSettings
from core.topics import ROOT as NATIVE_ROOT
from core.topics import parse_topic
from gateway.boundary import RateLimitedLog, dead_letter, internal_error
from gateway.bridge import InboundMessage
from gateway.decoders import Decoders
from gateway.dedupe import SeqWindow
from gateway.quarantine import Quarantine
from gateway.source import MessageSource
from gateway.supervisor import Supervisor
from ingest.batch import Accepted, Batch, DeadLetter, WriteResult

__all__ = ["BatchSink", "CommittedListener", "Pipeline", "accept"]

_LOG = logging.getLogger(__name__)
_SETTLED_LOG = RateLimitedLog(_LOG)
_T = TypeVar("_T")
# How often counters are saved for the API's /metrics.
METRICS_EVERY_S = 5.0
# How often listeners get a tick without traffic (timers such as absence rules).
TICK_EVERY_S = 0.25
# With flush_interval_ms > 0 only: intake polls for more messages this often.
_POLL_S = 0.002
# Idle wake-up: how quickly a stop request is noticed when no messages come.
_IDLE_S = 0.1
NATIVE_PREFIX = NATIVE_ROOT + "/"


class BatchSink(Protocol):
    def write(self, batch: Batch) -> WriteResult: ...


class CommittedListener(Protocol):
    """Told what was committed and how time passes, after the acknowledgement.

    The rule engine hooks in here; both calls come from one thread (the listener
    thread), in commit order. ``committed`` returns the messages it failed on
    (a rule raised): each becomes an ``internal_error`` dead letter, and the rest of
    the batch counts as evaluated.
    """

    def committed(self, accepted: Sequence[Accepted]) -> Sequence[MessageFailure] | None: ...

    def tick(self, now: datetime) -> Sequence[MessageFailure] | None: ...


@dataclass(slots=True)
class _Validated:
    messages: list[InboundMessage]
    batch: Batch
    duplicates: int
    journal: Path | None = None  # the quarantine's record of this batch in flight


class _Ready:
    """Validated batches waiting for the commit thread, which takes them all at once.

    ``put`` waits while ``limit`` messages are waiting already (memory stays bounded
    when the database is slow); ``take`` returns everything waiting, up to ``limit``
    messages (at least one batch), or ``[None]`` for the end, after the rest."""

    def __init__(self, limit: int) -> None:
        self._items: deque[_Validated | None] = deque()
        self._messages = 0
        self._limit = limit
        self._cond = threading.Condition()

    @property
    def messages(self) -> int:
        return self._messages

    def put(self, item: _Validated | None, timeout: float) -> bool:
        """False when it stayed full for ``timeout`` (the end, None, is always taken)."""
        with self._cond:
            if item is not None and self._messages >= self._limit:
                self._cond.wait(timeout)
                if self._messages >= self._limit:
                    return False
            self._items.append(item)
            self._messages += len(item.messages) if item is not None else 0
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> list[_Validated | None]:
        """What is waiting (empty after ``timeout`` without any)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            taken: list[_Validated | None] = []
            messages = 0
            while self._items:
                head = self._items[0]
                if head is None:
                    if not taken:
                        self._items.popleft()
                        taken.append(None)
                    break
                if taken and messages + len(head.messages) > self._limit:
                    break
                taken.append(self._items.popleft())
                messages += len(head.messages)
            self._messages -= messages
            self._cond.notify_all()
            return taken


def accept(
    topic_name: str,
    payload: bytes,
    received_at: datetime,
    registry: DeviceDirectory,
    limits: Limits,
    decoders: Decoders | None = None,
) -> Accepted:
    """One message's way in (topic, registry, payload); ``RejectedMessage`` if refused.

    The pipeline's path, and a dead letter's replay. Topics a decoder profile owns
    (Alink, vendor JSON) are decoded by it (``gateway.decoders``)."""
    if (
        decoders is not None
        and not topic_name.startswith(NATIVE_PREFIX)
        and decoders.owns(topic_name)
    ):
        decoded = decoders.decode(topic_name, payload, received_at, registry, limits)
    else:
        topic = parse_topic(topic_name)
        registry.check(topic)
        decoded = decode(topic, payload, received_at, limits)
    return Accepted(
        device_id=decoded.topic.device_id,
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
        bridge: MessageSource,
        sink: BatchSink,
        registry: DeviceDirectory,
        counters: PipelineCounters,
        settings: IngestSettings,
        limits: Limits,
        save_metrics: Callable[[dict[str, object]], None] | None = None,
        listeners: Sequence[CommittedListener] = (),
        on_message: Callable[[InboundMessage], None] | None = None,
        quarantine: Quarantine | None = None,
        decoders: Decoders | None = None,
        on_settled: Callable[[Sequence[InboundMessage], Sequence[DeadLetter]], None] | None = None,
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
        self._ready = _Ready(settings.batch_size)
        # Committed batches for the listeners: (accepted, messages, commit time).
        self._backlog: deque[tuple[Sequence[Accepted], int, float]] = deque()
        self._backlog_messages = 0
        self._backlog_done = False
        self._backlog_cond = threading.Condition()
        self._metrics_saved = 0.0
        self._ticked = 0.0
        # Dead letters for messages the listeners failed on (after their commit):
        # written by the commit thread, which owns the writer.
        self._late: deque[DeadLetter] = deque()
        # Test hooks (gateway.hooks): called with each message before it is validated.
        self._on_message = on_message
        self._quarantine = quarantine
        self._decoders = decoders
        # Told, after each commit, which messages were settled and which of them are
        # dead letters (gateway.replies answers Alink devices from it).
        self._on_settled = on_settled
        self._beat: Callable[[str], None] = lambda _name: None
        self._supervisor: Supervisor | None = None

    @property
    def ready_messages(self) -> int:
        """Validated messages waiting for the commit thread (its next batch)."""
        return self._ready.messages

    # -- threads -------------------------------------------------------------

    def run(self, stop: threading.Event, supervisor: Supervisor | None = None) -> None:
        """Run until ``stop`` is set; what is committed by then is acknowledged.

        Raises ``PipelineFailed`` when one of its threads ended unexpectedly.
        """
        supervisor = supervisor or Supervisor(stop=stop)
        self._supervisor = supervisor
        self._beat = supervisor.beat
        supervisor.starting()
        notifier = supervisor.start("listeners", self._listener_loop)
        committer = supervisor.start("commit", self._commit_loop, stop)
        intake = supervisor.start("intake", self._intake_loop, stop)
        heartbeat = supervisor.start("heartbeat", supervisor.heartbeat_loop)
        while not stop.wait(_IDLE_S * 5):
            pass
        intake.join()
        self._put(None, committer)
        committer.join()
        with self._backlog_cond:  # after everything committed was handed over
            self._backlog_done = True
            self._backlog_cond.notify_all()
        notifier.join()
        if self._write_late(stop):  # what the listeners failed on last; the writer is idle
            self._housekeeping(force_metrics=True)
        heartbeat.join()
        supervisor.finished()

    def _put(self, item: _Validated | None, committer: threading.Thread) -> None:
        while committer.is_alive():  # else nobody would ever take it (it failed)
            if self._ready.put(item, timeout=_IDLE_S):
                return

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
            if self._ready.put(item, timeout=_IDLE_S):
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
            taken = self._ready.take(timeout=_IDLE_S)
            if not taken:
                self._write_late(stop)
                self._housekeeping()
                if stop.is_set():
                    break
                continue
            items = [i for i in taken if i is not None]
            if not items:
                break
            self._commit(items, stop)
            self._write_late(stop)
            self._housekeeping()
        self._write_late(stop)
        self._housekeeping(force_metrics=True)  # the last counters outlive the process

    # -- intake --------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[InboundMessage]:
        """Whatever has arrived, up to a batch: wait only for the first message."""
        inbox = self.bridge.inbox
        limit = self.settings.batch_size
        try:
            batch = [inbox.get(timeout=_IDLE_S)]
        except queue.Empty:
            return []
        flush_after = self.settings.flush_interval_ms / 1000
        deadline = time.monotonic() + flush_after
        while len(batch) < limit:
            try:
                while len(batch) < limit:
                    batch.append(inbox.get_nowait())
            except queue.Empty:
                pass
            if flush_after <= 0 or time.monotonic() >= deadline or stop.is_set():
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
        return accept(
            message.topic, message.payload, received_at, self.registry, self.limits, self._decoders
        )

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

    def _commit(self, items: list[_Validated], stop: threading.Event) -> None:
        """Commit the batches intake validated since the last commit as one."""
        if len(items) == 1:
            batch, messages, duplicates = items[0].batch, items[0].messages, items[0].duplicates
        else:
            batch = Batch(
                [a for i in items for a in i.batch.accepted],
                [d for i in items for d in i.batch.dead_letters],
            )
            messages = [m for i in items for m in i.messages]
            duplicates = sum(i.duplicates for i in items)
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize() + len(messages))
        started = time.perf_counter()
        result = self._retrying(partial(self.sink.write, batch), stop)
        if result is None:
            return  # stopping during an outage: not acked, the broker keeps it all
        self.counters.committed(messages=len(messages), seconds=time.perf_counter() - started)
        self._count(batch, result, duplicates)
        self.bridge.ack(messages)
        if self._on_settled is not None:
            self._settled(messages, result.dead_letters)
        if self._quarantine is not None:
            for item in items:
                if item.journal is not None:
                    self._quarantine.end(item.journal, item.messages)
        if self.listeners:
            self._hand_to_listeners(batch.accepted, len(messages), stop)

    def _settled(self, messages: Sequence[InboundMessage], dead: Sequence[DeadLetter]) -> None:
        assert self._on_settled is not None
        try:
            self._on_settled(messages, dead)
        except Exception as exc:  # noqa: BLE001 - the hook's boundary: answers must not stop commits
            _SETTLED_LOG.error("answering settled messages failed", exc_info=exc)

    def _hand_to_listeners(
        self, accepted: Sequence[Accepted], messages: int, stop: threading.Event
    ) -> None:
        """Queue a committed batch for the engine; wait only past the backlog bound."""
        limit = self.settings.engine_backlog
        with self._backlog_cond:
            while self._backlog_messages >= limit and not stop.is_set():
                if self._supervisor is not None and self._supervisor.failure is not None:
                    break  # the engine's thread is gone: do not wait for it
                self._beat("commit")
                self._backlog_cond.wait(_IDLE_S)
            self._backlog.append((accepted, messages, time.monotonic()))
            self._backlog_messages += messages
            self._backlog_cond.notify_all()
        self._report_lag()

    def _report_lag(self) -> None:
        with self._backlog_cond:
            messages = self._backlog_messages
            oldest = self._backlog[0][2] if self._backlog else None
        self.counters.set("engine_lag_messages", messages)
        self.counters.gauge(
            "engine_lag_seconds", 0.0 if oldest is None else time.monotonic() - oldest
        )

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

    def _evaluated(self, messages: int, batches: int) -> None:
        with self._backlog_cond:
            for _ in range(batches):
                self._backlog.popleft()
            self._backlog_messages -= messages
            self._backlog_cond.notify_all()
        self._report_lag()

    def _listener_loop(self) -> None:
        """Evaluate everything committed and not yet evaluated, in one call: that is
        how the engine catches up, one evaluation and one alert transaction for the lot."""
        while True:
            self._beat("listeners")
            with self._backlog_cond:
                if not self._backlog and not self._backlog_done:
                    self._backlog_cond.wait(TICK_EVERY_S)
                taken = list(self._backlog)
                done = self._backlog_done and not taken
            if done:
                return
            accepted: list[Accepted] = []
            for batch, _, _ in taken:
                accepted.extend(batch)
            try:
                self._notify(accepted)
            except Exception:  # noqa: BLE001 - the thread's boundary: a listener bug must not stall commits
                _LOG.exception("a listener failed; it keeps getting later batches")
            finally:
                self._evaluated(sum(m for _, m, _ in taken), len(taken))

    def _notify(self, accepted: Sequence[Accepted]) -> None:
        if accepted:
            for listener in self.listeners:
                self._failed(listener.committed(accepted))
        now = time.monotonic()
        if now - self._ticked >= TICK_EVERY_S:
            self._ticked = now
            wall = datetime.now(UTC)
            for listener in self.listeners:
                self._failed(listener.tick(wall))

    def _failed(self, failures: Sequence[MessageFailure] | None) -> None:
        """Messages a listener failed on: dead letters, written by the commit thread."""
        for f in failures or ():
            self._late.append(internal_error(f.topic, f.payload, f.received_at, f.error, f.stage))

    def _write_late(self, stop: threading.Event) -> bool:
        """Write the dead letters of messages the listeners failed on. Their content is
        committed and acknowledged already: these record the failure, once."""
        late: list[DeadLetter] = []
        while self._late:
            late.append(self._late.popleft())
        if not late:
            return False
        result = self._retrying(partial(self.sink.write, Batch(dead_letters=late)), stop)
        if result is None:
            _LOG.warning("stopping: %d listener failure(s) not written", len(late))
            return False
        for dead in result.dead_letters:
            self.counters.reject(dead.reason)
        return True

    def _housekeeping(self, *, force_metrics: bool = False) -> None:
        now = time.monotonic()
        self.counters.set("awaiting_ack", self.bridge.inbox.qsize() + self._ready.messages)
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
