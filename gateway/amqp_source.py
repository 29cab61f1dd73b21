"""The AMQP side of a clustered worker: community-shard queues on a RabbitMQ cluster.

A worker consumes every shard queue (quorum, single-active-consumer): RabbitMQ
delivers a shard to one consumer at a time, and when that consumer's channel
dies the next one in line gets the shard, unacknowledged messages included.
RabbitMQ 3.10 does not tell a consumer that it became the active one over
AMQP 0-9-1, so the first delivery of a consumer session is the takeover:
``on_activate(shard)`` runs (the rule state of the shard's communities is
rebuilt from PostgreSQL) before that message goes anywhere.

The source offers the pipeline what ``MqttBridge`` does (``inbox``, ``ack``,
``connected``...), so validation, storage and the rule engine are the same
code. Acks are sent after commit from the pipeline's thread through pika's
``add_callback_threadsafe`` and never across a consumer session: each session
has its own generation, and a message of an ended session is left to its
redelivery.

Topology (declared by every worker, idempotent): ``amq.topic`` --community.*.*.*.*-->
``sc.devices`` (topic, alternate exchange ``sc.unrouted``) --community.<cid>.*.*.*-->
the shard queue of the community. A community with no binding yet falls into
the ``sc.unrouted`` queue; a worker binds it and moves the message on (with
publisher confirms, acked after), so a newly registered community loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from core.settings import ClusterSettings
from core.topics import parse_topic
from gateway.bridge import InboundMessage
from gateway.shards import (
    DEVICE_TOPICS,
    EXCHANGE,
    UNROUTED_EXCHANGE,
    UNROUTED_QUEUE,
    binding_key,
    queue_name,
    routing_key_to_topic,
    shard_of,
)

__all__ = ["DEVICES_EXCHANGE", "AmqpSource", "declare_topology"]

_LOG = logging.getLogger(__name__)
DEVICES_EXCHANGE = "sc.devices"
# pika's I/O loop wakes this often to run acks and notice a stop.
_IO_SLICE_S = 0.05
# Queue depths (passive declares) are read this often, for /metrics.
DEPTH_EVERY_S = 5.0
# Communities are re-read from the registry and bound this often.
BIND_EVERY_S = 30.0
# At most one shard is given up per this long, so a joining worker's takeovers
# (each a rule-state rebuild) spread out and settle instead of cascading at once.
REBALANCE_EVERY_S = 10.0
# A shard whose rule state could not be rebuilt (the database is down, say during a
# Patroni failover) is given back and consumed again after this long, so workers
# do not trade it back and forth in a tight loop while the database is away.
ACTIVATION_RETRY_S = 2.0
_QUEUE_ARGS = {"x-queue-type": "quorum", "x-single-active-consumer": True}


def declare_topology(
    channel: BlockingChannel, settings: ClusterSettings, communities: Iterable[str]
) -> int:
    """Exchanges, shard queues and one binding per community; returns bindings made."""
    channel.exchange_declare(UNROUTED_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(UNROUTED_QUEUE, durable=True, arguments=_QUEUE_ARGS)
    channel.queue_bind(UNROUTED_QUEUE, UNROUTED_EXCHANGE)
    channel.exchange_declare(
        DEVICES_EXCHANGE,
        "topic",
        durable=True,
        arguments={"alternate-exchange": UNROUTED_EXCHANGE},
    )
    channel.exchange_bind(DEVICES_EXCHANGE, EXCHANGE, routing_key=DEVICE_TOPICS)
    for shard in range(settings.shards):
        channel.queue_declare(
            queue_name(settings.queue_prefix, shard), durable=True, arguments=_QUEUE_ARGS
        )
    made = 0
    for community in communities:
        bind_community(channel, settings, community)
        made += 1
    return made


def bind_community(channel: BlockingChannel, settings: ClusterSettings, community: str) -> None:
    shard = shard_of(community, settings.shards)
    channel.queue_bind(
        queue_name(settings.queue_prefix, shard), DEVICES_EXCHANGE, binding_key(community)
    )


@dataclass(slots=True)
class _Session:
    """One consumer on one shard queue, from basic.consume to its end."""

    shard: int
    generation: int
    channel: BlockingChannel
    active: bool = False
    # Its takeover failed: deliveries are left unacknowledged until the channel closes.
    failed: bool = False


@dataclass(slots=True)
class ShardStatus:
    active: set[int] = field(default_factory=set)
    depth: dict[int, int] = field(default_factory=dict)
    takeovers: int = 0
    released: int = 0
    moved_unrouted: int = 0
    activation_failures: int = 0
    consumers: dict[int, int] = field(default_factory=dict)


class AmqpSource:
    """Consumes all shard queues of the cluster into ``self.inbox``."""

    def __init__(
        self,
        *,
        settings: ClusterSettings,
        communities: Callable[[], Iterable[str]],
        on_activate: Callable[[int], None] = lambda _s: None,
        on_deactivate: Callable[[int], None] = lambda _s: None,
        members: Callable[[], int] | None = None,
    ) -> None:
        if not settings.urls:
            raise ValueError("SC_CLUSTER__AMQP_URLS is empty")
        self.settings = settings
        self.inbox: queue.SimpleQueue[InboundMessage] = queue.SimpleQueue()
        self.connected = threading.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self.status = ShardStatus()
        self._communities = communities
        self._on_activate = on_activate
        self._on_deactivate = on_deactivate
        self._members = members
        self._lock = threading.Lock()
        self._sessions: dict[int, _Session] = {}  # generation -> session
        self._by_shard: dict[int, _Session] = {}
        self._generation = 0
        self._connection: BlockingConnection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound: set[str] = set()
        self._retry_at: dict[int, float] = {}  # shard -> monotonic time to consume again

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="amqp-network", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def network_alive(self) -> bool:
        return self._thread is None or self._thread.is_alive() or self._stop.is_set()

    # -- the network thread -----------------------------------------------------------

    def _run(self) -> None:
        delay = self.settings.reconnect_min_s
        while not self._stop.is_set():
            try:
                self._serve()
                delay = self.settings.reconnect_min_s
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                _LOG.warning("AMQP connection lost (%s); reconnecting", self.last_error)
            finally:
                self._end_all()
            if self._stop.is_set():
                break
            self.reconnects += 1
            # Jitter spreads a fleet of workers reconnecting to the surviving nodes.
            self._stop.wait(random.uniform(delay, 2 * delay))  # noqa: S311 - jitter
            delay = min(delay * 2, self.settings.reconnect_max_s)

    def _parameters(self) -> list[pika.URLParameters]:
        urls = list(self.settings.urls)
        random.shuffle(urls)  # spread workers over the nodes
        params = []
        for url in urls:
            p = pika.URLParameters(url)
            p.heartbeat = self.settings.heartbeat_s
            p.blocked_connection_timeout = 60
            p.socket_timeout = 5
            p.connection_attempts = 1
            params.append(p)
        return params

    def _serve(self) -> None:
        connection = BlockingConnection(self._parameters())
        self._connection = connection
        try:
            control = connection.channel()
            self._bind_all(control, declare=True)
            for shard in range(self.settings.shards):
                self._consume(connection, shard)
            unrouted = connection.channel()
            unrouted.confirm_delivery()
            unrouted.basic_qos(prefetch_count=100)
            unrouted.basic_consume(
                UNROUTED_QUEUE,
                lambda ch, m, p, b: self._reroute(ch, m, p, b),
                auto_ack=False,
            )
            self.connected.set()
            self.last_error = None
            _LOG.info("consuming %d shard queues", self.settings.shards)
            depth_due = bind_due = 0.0
            rebalance_due = time.monotonic() + REBALANCE_EVERY_S
            while not self._stop.is_set():
                connection.process_data_events(time_limit=_IO_SLICE_S)
                now = time.monotonic()
                if now >= depth_due:
                    depth_due = now + DEPTH_EVERY_S
                    self._read_depths(control)
                    if now >= rebalance_due and self._rebalance():
                        rebalance_due = now + REBALANCE_EVERY_S
                if now >= bind_due:
                    bind_due = now + BIND_EVERY_S
                    self._bind_all(control, declare=False)
                for session in list(self._by_shard.values()):
                    if session.failed:
                        self._give_back(session, now)
                    elif not session.channel.is_open:  # closed by the broker (queue error)
                        self._end(session)
                for shard in range(self.settings.shards):
                    if shard not in self._by_shard and now >= self._retry_at.get(shard, 0.0):
                        self._consume(connection, shard)  # cancelled or closed: come back
        finally:
            self._connection = None
            self.connected.clear()
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    connection.close()

    def _bind_all(self, channel: BlockingChannel, *, declare: bool) -> None:
        try:
            communities = set(self._communities())
        except Exception as exc:  # noqa: BLE001 - the registry is down: bind later
            _LOG.warning("communities not read for binding: %s", exc)
            communities = set()
        if declare:
            declare_topology(channel, self.settings, sorted(communities))
            self._bound = communities
            return
        for community in sorted(communities - self._bound):
            bind_community(channel, self.settings, community)
            self._bound.add(community)

    def _consume(self, connection: BlockingConnection, shard: int) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self.settings.prefetch)
        with self._lock:
            self._generation += 1
            session = _Session(shard, self._generation, channel)
            self._sessions[session.generation] = session
            self._by_shard[shard] = session
        channel.add_on_cancel_callback(lambda _frame, s=session: self._end(s))
        channel.basic_consume(
            queue_name(self.settings.queue_prefix, shard),
            lambda ch, m, p, b, s=session: self._deliver(s, m, b),
            auto_ack=False,
        )

    def _deliver(self, session: _Session, method: Basic.Deliver, body: bytes) -> None:
        if session.failed:
            return  # not acked: back to the queue when the loop closes the channel
        if not session.active:
            # The first delivery of this consumer: the shard is ours from now on,
            # once its rule state is rebuilt from the database.
            try:
                self._on_activate(session.shard)
            except Exception as exc:  # noqa: BLE001 - the boundary: this thread must live on
                # Typically the database is down (a failover): give the shard back,
                # unacknowledged, and take it again later; a crash here would end
                # the worker and take every shard of it along.
                session.failed = True
                self.status.activation_failures += 1
                _LOG.warning("shard %d not taken over (%s); retrying", session.shard, exc)
                return
            session.active = True
            self.status.active.add(session.shard)
            self.status.takeovers += 1
            _LOG.info("active on shard %d (takeover %d)", session.shard, self.status.takeovers)
        self.inbox.put(
            InboundMessage(
                routing_key_to_topic(method.routing_key),
                body,
                1,
                method.delivery_tag,
                time.time(),
                session.generation,
            )
        )

    def _end(self, session: _Session) -> None:
        with self._lock:
            self._sessions.pop(session.generation, None)
            if self._by_shard.get(session.shard) is session:
                del self._by_shard[session.shard]
        if session.active:
            session.active = False
            self.status.active.discard(session.shard)
            self._on_deactivate(session.shard)

    def _give_back(self, session: _Session, now: float) -> None:
        """Close a session whose takeover failed: its deliveries return to the queue and
        the next consumer in line (or we, after ``ACTIVATION_RETRY_S``) tries again."""
        self._end(session)
        self._retry_at[session.shard] = now + ACTIVATION_RETRY_S
        with contextlib.suppress(pika.exceptions.AMQPError):
            session.channel.close()

    def _end_all(self) -> None:
        for session in list(self._sessions.values()):
            self._end(session)

    def _read_depths(self, channel: BlockingChannel) -> None:
        for shard in range(self.settings.shards):
            ok = channel.queue_declare(queue_name(self.settings.queue_prefix, shard), passive=True)
            self.status.depth[shard] = int(ok.method.message_count)
            self.status.consumers[shard] = int(ok.method.consumer_count)

    def _rebalance(self) -> bool:
        """Give up one shard when active on more than a fair share; True if done.

        Single-active-consumer never moves a shard to a consumer that joins later,
        so a new worker would idle: the busiest workers hand shards over. Closing
        the shard's channel returns its unacknowledged messages to the queue and
        makes the next consumer in line active (it rebuilds the rule state); we
        consume again at the back of the line. Committed-but-unacked messages are
        redelivered and absorbed by the database's keys, as after a crash.
        """
        try:
            # RabbitMQ counts only the active consumer of a single-active-consumer
            # queue, so the workers' heartbeats (gateway.cluster) say how many there are.
            workers = self._members() if self._members is not None else 0
        except Exception as exc:  # noqa: BLE001 - the database is down: balance later
            _LOG.debug("worker count unknown: %s", exc)
            return False
        if workers <= 1:
            return False
        fair = -(-self.settings.shards // workers)  # ceil
        active = [s for s in self._by_shard.values() if s.active]
        if len(active) <= fair:
            return False
        session = max(active, key=lambda s: s.shard)
        _LOG.info(
            "active on %d shards, fair share %d of %d workers: handing shard %d over",
            len(active),
            fair,
            workers,
            session.shard,
        )
        self.status.released += 1
        self._end(session)
        with contextlib.suppress(pika.exceptions.AMQPError):
            session.channel.close()
        return True

    def _reroute(
        self, channel: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes
    ) -> None:
        """A message of a community with no binding yet: bind it, send it on, then ack."""
        key = method.routing_key
        try:
            community = parse_topic(routing_key_to_topic(key)).community_id
        except Exception:  # noqa: BLE001 - not a device topic: the pipeline dead-letters it
            community = None
        if community is not None:
            bind_community(channel, self.settings, community)
            self._bound.add(community)
            channel.basic_publish(DEVICES_EXCHANGE, key, body, props, mandatory=True)
        else:
            # Straight to shard 0's queue (default exchange): refused there, with the reason.
            channel.basic_publish("", queue_name(self.settings.queue_prefix, 0), body, props)
        channel.basic_ack(method.delivery_tag)  # after the broker confirmed the publish
        self.status.moved_unrouted += 1

    # -- acknowledgement (pipeline thread) ----------------------------------------------

    def ack(self, messages: Iterable[InboundMessage]) -> int:
        """Acknowledge committed messages of live consumer sessions; return how many."""
        connection = self._connection
        if connection is None:
            return 0
        by_session: dict[int, list[int]] = {}
        with self._lock:
            for m in messages:
                if m.generation in self._sessions:
                    by_session.setdefault(m.generation, []).append(m.mid)
            targets = [(self._sessions[g], tags) for g, tags in by_session.items()]
        if not targets:
            return 0

        def send() -> None:
            for session, tags in targets:
                if session.generation not in self._sessions or not session.channel.is_open:
                    continue  # ended meanwhile: the broker redelivers these
                for tag in tags:
                    session.channel.basic_ack(tag)

        try:
            connection.add_callback_threadsafe(send)
        except (pika.exceptions.AMQPError, OSError):
            return 0  # the connection is going: redelivery covers it
        return sum(len(tags) for _, tags in targets)

    def snapshot(self) -> dict[str, Any]:
        """Shard figures for /metrics."""
        status = self.status
        return {
            "shards_active": len(status.active),
            "shard_takeovers_total": status.takeovers,
            "shard_releases_total": status.released,
            "shard_activation_failures_total": status.activation_failures,
            "unrouted_moved_total": status.moved_unrouted,
            "shard_active": {str(s): int(s in status.active) for s in range(self.settings.shards)},
            "shard_queue_depth": {str(s): d for s, d in sorted(status.depth.items())},
        }
