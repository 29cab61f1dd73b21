"""What the cluster tests share: communities of simulated devices, their load, the
workers, and the checks that every reading is stored once and every incident
alerted once (tests/cluster/test_cluster.py, tests/cluster/test_patroni.py)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg
import pytest

from core.errors import ConfigurationError, ServiceUnavailable
from core.topics import device_topic
from gateway.pipeline import METRICS_EVERY_S
from gateway.shards import shard_of
from smartcommunity.cluster_rig import (
    FailoverPublisher,
    WorkerProcess,
    poll,
    worker_env,
)
from smartcommunity.rabbit_cluster import RabbitCluster
from store import schema

SHARDS = 4
WEARABLES = 6  # per community
COMMUNITIES = 3
# Telemetry messages per second per community: a steady load the loaded 2-core
# machine carries next to three broker nodes, three workers and PostgreSQL.
RATE = 40.0
# Generous: the machine is shared and a takeover includes a rule-state rebuild.
DRAIN_S = 300.0
# Workers save their figures (shard_active...) this often, plus a margin.
SAVE_PERIOD_S = METRICS_EVERY_S + 1.5
CONFIRMED = "Confirmed fire (two independent detectors)"  # alerts/defaults/fire.yaml
BASE_MS = int(time.time() * 1000) - 3_600_000  # telemetry an hour back, unique per message

# A community's id, its wearables and its two fire detectors (one building).
Registered = tuple[str, list[str], list[str]]


@dataclass
class Community:
    id: str
    wearables: list[str]
    detectors: list[str]
    publisher: FailoverPublisher
    sent: Counter[str] = field(default_factory=Counter)
    events: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def telemetry(self, device: str) -> None:
        with self.lock:
            n = self.sent[device]
            self.sent[device] += 1
            payload = {"ts": BASE_MS + n, "seq": n, "metrics": {"heart_rate": 72, "spo2": 97}}
            self.publisher.publish(
                device_topic(self.id, "wearable", device, "telemetry"), json.dumps(payload).encode()
            )

    def event(self, device: str, device_class: str, name: str) -> None:
        with self.lock:
            self.events += 1
            payload = {"ts": int(time.time() * 1000), "seq": 1_000_000 + self.events, "event": name}
            self.publisher.publish(
                device_topic(self.id, device_class, device, "event"), json.dumps(payload).encode()
            )


class Load:
    """Telemetry from every wearable of every community, until stopped."""

    def __init__(self, communities: list[Community]) -> None:
        self.communities = communities
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                for community in self.communities:
                    community.telemetry(community.wearables[i % len(community.wearables)])
                i += 1
                self.stop.wait(max(0.0, 1 / RATE - (time.monotonic() - started)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def scalar(url: str, sql: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def register(url: str, uid: str) -> list[Registered]:
    schema.upgrade(url)
    made = []
    # Communities on distinct shards, so that there is work to hand over.
    cids: list[str] = []
    k = 0
    while len(cids) < COMMUNITIES:
        cid = f"c{k}-{uid}"
        if shard_of(cid, SHARDS) not in {shard_of(c, SHARDS) for c in cids}:
            cids.append(cid)
        k += 1
    with psycopg.connect(url) as conn:
        for c, cid in enumerate(cids):
            wearables = [f"w{c}-{d}-{uid}" for d in range(WEARABLES)]
            detectors = [f"f{c}-{d}-{uid}" for d in range(2)]
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (cid, cid))
            for device in wearables:
                conn.execute(
                    "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, %s)",
                    (device, cid, "wearable"),
                )
            for device in detectors:
                conn.execute(
                    "INSERT INTO devices (id, community_id, device_class, building)"
                    " VALUES (%s, %s, 'fire', 'b1')",
                    (device, cid),
                )
            made.append((cid, wearables, detectors))
    return made


@dataclass
class Rig:
    url: str
    cluster: RabbitCluster
    uid: str
    tmp: Path
    communities: list[Community]
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, index: int) -> WorkerProcess:
        name = f"w{index}-{self.uid}"
        env = worker_env(
            database_url=self.url,
            amqp_urls=self.cluster.amqp_urls,
            client_id=name,
            shards=SHARDS,
            queue_prefix=f"sc.t{self.uid}",
            data_dir=self.tmp / name,
        )
        proc = WorkerProcess(name, env, self.tmp / f"{name}.log").start()
        self.workers.append(proc)
        poll(
            lambda: (
                scalar(
                    self.url,
                    "SELECT count(*) FROM pipeline_metrics WHERE worker = %s AND state = 'running'",
                    (name,),
                )
                == 1
            ),
            120,
            f"worker {name} running ({proc.tail()})",
        )
        return proc

    def telemetry_rows(self) -> int:
        return scalar(self.url, "SELECT count(DISTINCT (device_id, ts)) FROM readings")

    def sent(self) -> int:
        return sum(sum(c.sent.values()) for c in self.communities)

    def active_worker(self, shard: int, since: datetime) -> WorkerProcess:
        """The one live worker whose figures, saved after ``since``, say it is active on it."""
        found: list[WorkerProcess] = []

        def one() -> bool:
            found.clear()
            with psycopg.connect(self.url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT worker, counters FROM pipeline_metrics WHERE updated_at > %s",
                    (since,),
                ).fetchall()
            claims = {w for w, c in rows if (c.get("shard_active") or {}).get(str(shard)) == 1}
            found.extend(w for w in self.workers if w.alive and w.name in claims)
            return len(found) == 1 and len(claims) == 1

        # The same owner twice, a save period apart: a worker that just handed the
        # shard over may still claim it in figures saved before, and workers still
        # settling on a fair share may move it once more; wait for that to settle.
        moves: list[str] = []
        deadline = time.monotonic() + 120
        while True:
            poll(one, 90, f"one worker active on shard {shard}", every=0.5)
            first = found[0]
            time.sleep(SAVE_PERIOD_S)
            poll(one, 90, f"one worker active on shard {shard}", every=0.5)
            if found[0] is first:
                return first
            moves.append(f"{first.name} -> {found[0].name}")
            assert time.monotonic() < deadline, f"shard {shard} never settled: {moves}"

    def wait_drained(self) -> None:
        expected = self.sent()
        poll(
            lambda: self.telemetry_rows() >= expected,
            DRAIN_S,
            f"{expected} telemetry messages stored (have {self.telemetry_rows()})",
            every=1.0,
        )

    def check_exactly_once(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            stored: dict[str, int] = {
                str(d): int(n)
                for d, n in conn.execute(
                    "SELECT device_id, count(DISTINCT ts) FROM readings GROUP BY device_id"
                )
            }
            rows, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings"
            ).fetchone() or (0, 0)
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        sent = {d: n for c in self.communities for d, n in c.sent.items()}
        assert stored == sent, "per-device telemetry counts differ from what was sent"
        assert rows == distinct == 2 * sum(sent.values()), "duplicate or missing reading rows"
        assert dead is not None
        assert dead[0] == 0, "messages were dead-lettered"

    def check_incidents(self) -> None:
        """One confirmed fire per building, one SOS alert per community: no more."""
        for c in self.communities:
            # The title and the two devices say "confirmed": severity alone would not,
            # since an unacknowledged pre-alarm escalates to critical after 2 minutes.
            fire = [(f"building:{c.id}/b1", CONFIRMED, sorted(c.detectors))]

            def confirmed(cid: str = c.id, want: list[tuple[str, str, list[str]]] = fire) -> bool:
                return self.fires(cid) == want

            poll(confirmed, 120, f"one confirmed fire in {c.id}")
            assert len(self.alerts("wearable.sos", c.id)) == 1

    def fires(self, community: str) -> list[tuple[str, str, list[str]]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return [
                (str(r[0]), str(r[1]), sorted(r[2] or []))
                for r in conn.execute(
                    "SELECT subject, title, details->'devices' FROM alerts"
                    " WHERE rule_id = 'fire.confirmed' AND community_id = %s",
                    (community,),
                ).fetchall()
            ]

    def alerts(self, rule: str, community: str) -> list[tuple[str, str]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return [
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    "SELECT severity, subject FROM alerts WHERE rule_id = %s AND community_id = %s",
                    (rule, community),
                ).fetchall()
            ]


class _Cluster(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


C = TypeVar("C", bound=_Cluster)


@contextmanager
def started(make: Callable[[], C], what: str) -> Iterator[C]:
    """A private cluster from ``make``, started, stopped after; one that cannot be made
    or started fails the tests with the reason (never a skip)."""
    try:
        cluster = make()
    except ConfigurationError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        cluster.stop()
        pytest.fail(f"the {what} cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def explained(rig: Rig) -> Iterator[None]:
    """On failure, the workers' logs say what happened."""
    try:
        yield
    except AssertionError as exc:
        tails = "\n".join(f"--- {w.name}\n{w.tail(2500)}" for w in rig.workers)
        raise AssertionError(f"{exc}\n{tails}") from exc


@contextmanager
def settled(rig: Rig, load: Load) -> Iterator[None]:
    """After ``load``: nothing failed to publish and everything sent is flushed; then,
    explained, every reading is stored once and every incident alerted once before the
    test's own checks in the body."""
    assert not load.errors, load.errors
    for community in rig.communities:
        community.publisher.flush()
    with explained(rig):
        rig.wait_drained()
        rig.check_exactly_once()
        rig.check_incidents()
        yield


@contextmanager
def rig_on(
    cluster: RabbitCluster, url: str, uid: str, tmp: Path, made: list[Registered]
) -> Iterator[Rig]:
    """A rig for the communities ``register`` made: their gateways connected to the
    broker nodes, and the workers it starts stopped afterwards."""
    ports = [n.mqtt_port for n in cluster.nodes]
    with ExitStack() as stack:
        communities = []
        for i, (cid, wearables, detectors) in enumerate(made):
            # Each community's gateway starts on another node, and moves on when it dies.
            publisher = FailoverPublisher([*ports[i:], *ports[:i]], f"gw-{cid}")
            stack.callback(publisher.close)
            communities.append(Community(cid, wearables, detectors, publisher))
        rig = Rig(url, cluster, uid, tmp, communities)
        try:
            yield rig
        finally:
            for worker in rig.workers:
                worker.stop()
