"""The clustered deployment under faults: a 3-node RabbitMQ cluster, several workers.

Devices of several communities publish over MQTT 3.1.1 QoS 1 to the nodes of a
private RabbitMQ cluster; ``smartcommunity worker`` processes consume the
community-shard queues into one PostgreSQL. A broker node and then the active
worker of a shard are killed with SIGKILL under load, and a worker joins under
load. Afterwards every device's rows are in the database exactly once and every
scripted incident has exactly one alert: the confirmed fire whose two detector
reports straddle the worker kill included (the takeover rebuilt the rule state).

Slow (minutes): marker ``cluster``, run by ``make test-cluster``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from core.topics import device_topic
from gateway.pipeline import METRICS_EVERY_S
from gateway.shards import shard_of
from smartcommunity.cluster_rig import (
    FailoverPublisher,
    WorkerProcess,
    poll,
    worker_env,
    worker_metrics,
)
from smartcommunity.rabbit_cluster import RabbitCluster
from store import schema

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

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


def _scalar(url: str, sql: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def _register(url: str, uid: str) -> list[tuple[str, list[str], list[str]]]:
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
                _scalar(
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
        return _scalar(self.url, "SELECT count(DISTINCT (device_id, ts)) FROM readings")

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

        # Twice, a save period apart: a worker that just handed the shard over may
        # still claim it in figures saved before, while the next owner has not saved yet.
        poll(one, 90, f"one worker active on shard {shard}", every=0.5)
        first = found[0]
        time.sleep(SAVE_PERIOD_S)
        poll(one, 90, f"one worker active on shard {shard}", every=0.5)
        assert found[0] is first, f"shard {shard} moved from {first.name} to {found[0].name}"
        return first

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


@pytest.fixture
def rig(
    cluster: RabbitCluster, fresh_database_url: str, unique_id: str, tmp_path: Path
) -> Iterator[Rig]:
    uid = unique_id[-8:]
    made = _register(fresh_database_url, uid)
    ports = [n.mqtt_port for n in cluster.nodes]
    with ExitStack() as stack:
        communities = []
        for i, (cid, wearables, detectors) in enumerate(made):
            # Each community's gateway starts on another node, and moves on when it dies.
            publisher = FailoverPublisher([*ports[i:], *ports[:i]], f"gw-{cid}")
            stack.callback(publisher.close)
            communities.append(Community(cid, wearables, detectors, publisher))
        rig = Rig(fresh_database_url, cluster, uid, tmp_path, communities)
        try:
            yield rig
        finally:
            for worker in rig.workers:
                worker.stop()


@contextmanager
def _explained(rig: Rig) -> Iterator[None]:
    """On failure, the workers' logs say what happened."""
    try:
        yield
    except AssertionError as exc:
        tails = "\n".join(f"--- {w.name}\n{w.tail(2500)}" for w in rig.workers)
        raise AssertionError(f"{exc}\n{tails}") from exc


def test_broker_node_then_active_worker_killed_under_load(rig: Rig) -> None:
    for i in range(3):
        rig.worker(i)
    for community in rig.communities:
        community.publisher.wait_connected()
    fire = rig.communities[0]
    shard = shard_of(fire.id, SHARDS)
    with _explained(rig), Load(rig.communities) as load:
        poll(lambda: rig.telemetry_rows() > 200, 120, "telemetry flowing through the workers")

        # A broker node dies (the first: it holds the queue leaders it declared).
        rig.cluster.kill(rig.cluster.nodes[0])
        for community in rig.communities:
            community.event(community.wearables[0], "wearable", "sos_pressed")
        at_kill = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_kill + 300, 180, "ingest going on after node kill")

        # First detector of each building: a pre-alarm, seen by the shard's owner.
        for community in rig.communities:
            community.event(community.detectors[0], "fire", "smoke_alarm")
        poll(lambda: len(rig.alerts("fire.confirmed", fire.id)) == 1, 120, "the pre-alarm")
        with psycopg.connect(rig.url, autocommit=True) as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        victim = rig.active_worker(shard, row[0])
        victim.kill()

        # The second detector reaches whoever takes the shard over.
        for community in rig.communities:
            community.event(community.detectors[1], "fire", "smoke_alarm")
        at_kill = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_kill + 300, 180, "ingest going on after worker kill")
        load.stop.set()
    assert not load.errors, load.errors
    for community in rig.communities:
        community.publisher.flush()

    with _explained(rig):
        rig.wait_drained()
        rig.check_exactly_once()
        rig.check_incidents()
        events = _scalar(rig.url, "SELECT count(*) FROM device_events")
        assert events == sum(c.events for c in rig.communities)
        survivors = [w for w in rig.workers if w.alive]
        assert survivors == [w for w in rig.workers if w is not victim]
        # Figures are saved every few seconds: the takeover shows up in them.
        poll(
            lambda: (
                sum(
                    worker_metrics(rig.url, w.name).get("shard_takeovers_total", 0)
                    for w in survivors
                )
                >= 1
            ),
            30,
            "a takeover in the survivors' figures",
        )


def test_worker_joining_under_load_takes_shards_without_loss(rig: Rig) -> None:
    rig.worker(0)
    for community in rig.communities:
        community.publisher.wait_connected()
    with _explained(rig), Load(rig.communities) as load:
        poll(lambda: rig.telemetry_rows() > 200, 120, "telemetry flowing through one worker")
        for community in rig.communities:
            community.event(community.detectors[0], "fire", "smoke_alarm")
        joined = rig.worker(1)
        # The first worker hands shards over (a fair share each); the newcomer takes them.
        poll(
            lambda: worker_metrics(rig.url, joined.name).get("shard_takeovers_total", 0) >= 1,
            120,
            "the joining worker active on a shard",
        )
        for community in rig.communities:
            community.event(community.detectors[1], "fire", "smoke_alarm")
            community.event(community.wearables[0], "wearable", "sos_pressed")
        at_join = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_join + 300, 180, "ingest going on after the join")
        load.stop.set()
    assert not load.errors, load.errors
    for community in rig.communities:
        community.publisher.flush()

    with _explained(rig):
        rig.wait_drained()
        rig.check_exactly_once()
        rig.check_incidents()
        first = worker_metrics(rig.url, rig.workers[0].name)
        assert first.get("shard_releases_total", 0) >= 1
