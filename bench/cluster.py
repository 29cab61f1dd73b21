"""Clustered ingest on this machine: throughput with 1, 2, 3 workers, CPU per 1,000
messages, and the takeover time after a worker is killed.

A private 3-node RabbitMQ cluster (Debian's rabbitmq-server) and ``smartcommunity
worker`` processes write into a fresh database on the PostgreSQL named by
``--database`` (default: this machine's, 127.0.0.1:5432). The device messages
are published to ``amq.topic`` with the routing keys RabbitMQ's MQTT plugin
gives device publishes, so what is measured is the workers' side (shard queues
to committed rows, rule engine on); the broker's MQTT ingress is not in it.

On a 2-core machine everything shares the cores, so throughput is CPU-bound
and flat in the worker count; CPU seconds per 1,000 messages carry over to
bigger machines (docs/scale-out.md does the sizing from them). PostgreSQL's
share is the CPU time of the workers' backends (``/proc`` of the sessions on
the run's database: what grows with the load; the server's shared background
processes are not in it). With ``--patroni`` the database is a private
3-node Patroni cluster in synchronous mode instead
(``smartcommunity.patroni_cluster``), reached by its multi-host URL, and the
whole process tree of the primary and of each replica is counted as well
(WAL writer and senders, checkpointer, the replicas' replay).

    .venv/bin/python bench/cluster.py [--messages 30000] [--workers 1,2,3] [--patroni]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pika
import psutil
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import BENCH_APP, backend_cpu, cpu_delta
from core.topics import device_topic
from gateway.amqp_source import declare_topology
from gateway.shards import EXCHANGE, shard_of, topic_to_routing_key
from smartcommunity.cluster_rig import WorkerProcess, poll, worker_env, worker_metrics
from smartcommunity.patroni_cluster import PatroniCluster
from smartcommunity.rabbit_cluster import RabbitCluster
from store import schema

SHARDS = 8
COMMUNITIES = 24
DEVICES = 25  # per community
BASE_MS = int(time.time() * 1000) - 7 * 24 * 3_600_000


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"sc_bench_cluster_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    # The path is the database, also in a multi-host URL (whose netloc urlsplit keeps).
    url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def register(url: str) -> list[tuple[str, list[str]]]:
    schema.upgrade(url)
    fleet = []
    with psycopg.connect(url) as conn:
        for c in range(COMMUNITIES):
            cid = f"bench-c{c:03d}"
            devices = [f"bench-c{c:03d}-w{d:03d}" for d in range(DEVICES)]
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (cid, cid))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (id, community_id, device_class)"
                    " VALUES (%s, %s, 'wearable')",
                    [(d, cid) for d in devices],
                )
            fleet.append((cid, devices))
    return fleet


class Feeder:
    """Publishes device telemetry to amq.topic as the MQTT plugin would, over AMQP."""

    def __init__(self, amqp_url: str, fleet: list[tuple[str, list[str]]]) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.fleet = fleet
        self.sent = 0

    def topology(self, prefix: str) -> None:
        from core.settings import ClusterSettings

        settings = ClusterSettings(amqp_urls="x", shards=SHARDS, queue_prefix=prefix)
        declare_topology(self.channel, settings, [c for c, _ in self.fleet])

    def publish(self, count: int) -> None:
        props = pika.BasicProperties(delivery_mode=2)
        for _ in range(count):
            n = self.sent
            cid, devices = self.fleet[n % len(self.fleet)]
            device = devices[(n // len(self.fleet)) % len(devices)]
            body = json.dumps(
                {"ts": BASE_MS + n, "seq": n, "metrics": {"heart_rate": 70, "spo2": 97}}
            ).encode()
            key = topic_to_routing_key(device_topic(cid, "wearable", device, "telemetry"))
            self.channel.basic_publish(EXCHANGE, key, body, props)
            self.sent += 1
            if n % 1000 == 0:
                self.connection.process_data_events(0)

    def close(self) -> None:
        self.connection.close()


def stored(url: str) -> int:
    with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as conn:
        row = conn.execute("SELECT count(DISTINCT (device_id, ts)) FROM readings").fetchone()
    return int(row[0]) if row else 0


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class Run:
    workers: int
    messages: int
    seconds: float
    worker_cpu: float
    broker_cpu: float
    db_cpu: float | None  # the workers' PostgreSQL backends
    rows: int
    nodes_cpu: dict[str, float] = field(default_factory=dict)  # Patroni: whole trees

    def line(self) -> str:
        def per_k(cpu: float) -> str:
            return f"{cpu / self.messages * 1000:.3f}"

        db = "n/a" if self.db_cpu is None else per_k(self.db_cpu)
        nodes = "".join(
            f" {name}_cpu_s_per_1k={per_k(cpu)}" for name, cpu in self.nodes_cpu.items()
        )
        return (
            f"workers={self.workers} messages={self.messages} seconds={self.seconds:.1f}"
            f" msgs/s={self.messages / self.seconds:,.0f} rows/s={self.rows / self.seconds:,.0f}"
            f" worker_cpu_s_per_1k={per_k(self.worker_cpu)}"
            f" broker_cpu_s_per_1k={per_k(self.broker_cpu)} db_backend_cpu_s_per_1k={db}{nodes}"
        )


def node_cpu(patroni: PatroniCluster | None) -> dict[str, float]:
    """CPU seconds so far of each Patroni node's PostgreSQL, named by its role."""
    if patroni is None:
        return {}
    leader = patroni.leader()
    found = {}
    for node in patroni.nodes:
        pid = node.postmaster_pid()
        if pid is None:
            continue
        role = "primary" if node is leader else f"replica_{node.name}"
        found[role] = cpu_seconds([psutil.Process(pid)])
    return found


def start_workers(
    cluster: RabbitCluster, url: str, count: int, prefix: str, tmp: Path
) -> list[WorkerProcess]:
    workers = []
    for i in range(count):
        name = f"bench-{prefix}-w{i}"
        env = worker_env(
            database_url=url,
            amqp_urls=cluster.amqp_urls,
            client_id=name,
            shards=SHARDS,
            queue_prefix=prefix,
            data_dir=tmp / name,
            SC_LOG_LEVEL="WARNING",
        )
        workers.append(WorkerProcess(name, env, tmp / f"{name}.log").start())
    for w in workers:

        def running(name: str = w.name) -> bool:
            return "shard_active" in worker_metrics(url, name)

        poll(running, 180, f"{w.name} running ({w.tail(800)})", every=0.5)
    return workers


def throughput(
    cluster: RabbitCluster,
    server_url: str,
    count: int,
    messages: int,
    tmp: Path,
    patroni: PatroniCluster | None = None,
) -> Run:
    prefix = f"sc.bench{secrets.token_hex(3)}"
    with fresh_database(server_url) as url:
        fleet = register(url)
        feeder = Feeder(cluster.nodes[0].amqp_url, fleet)
        feeder.topology(prefix)
        workers = start_workers(cluster, url, count, prefix, tmp)
        try:
            # Warm-up: every shard sees traffic, the workers settle on a fair share each.
            feeder.publish(2_000)
            poll(lambda: stored(url) >= feeder.sent, 300, "warm-up stored", every=0.5)
            fair = -(-SHARDS // count)
            poll(
                lambda: all(
                    worker_metrics(url, w.name).get("shards_active", 0) <= fair for w in workers
                ),
                120,
                "a fair share of shards each",
                every=1.0,
            )
            procs = [psutil.Process(w.process.pid) for w in workers if w.process is not None]
            brokers = [
                psutil.Process(n.process.pid) for n in cluster.nodes if n.process is not None
            ]
            worker_before, broker_before = cpu_seconds(procs), cpu_seconds(brokers)
            with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as conn:
                db_before = backend_cpu(conn)
            nodes_before = node_cpu(patroni)
            rows_before = 2 * stored(url)  # two metrics a message
            started = time.monotonic()
            target = feeder.sent + messages
            publisher = threading.Thread(target=feeder.publish, args=(messages,))
            publisher.start()
            publisher.join()
            poll(lambda: stored(url) >= target, 900, f"{messages} stored", every=0.25)
            seconds = time.monotonic() - started
            with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as conn:
                db_after = backend_cpu(conn)
            nodes_after = node_cpu(patroni)
            return Run(
                count,
                messages,
                seconds,
                cpu_seconds(procs) - worker_before,
                cpu_seconds(brokers) - broker_before,
                cpu_delta(db_before, db_after),
                2 * stored(url) - rows_before,
                {k: nodes_after[k] - v for k, v in nodes_before.items() if k in nodes_after},
            )
        finally:
            feeder.close()
            for w in workers:
                w.stop()


def takeover(cluster: RabbitCluster, server_url: str, tmp: Path, rate: float = 400.0) -> float:
    """Seconds from SIGKILL of a shard's active worker to the survivor's first message."""
    prefix = f"sc.bench{secrets.token_hex(3)}"
    with fresh_database(server_url) as url:
        fleet = register(url)
        feeder = Feeder(cluster.nodes[0].amqp_url, fleet)
        feeder.topology(prefix)
        workers = start_workers(cluster, url, 2, prefix, tmp)
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                feeder.publish(max(1, int(rate / 20)))
                stop.wait(0.05)

        thread = threading.Thread(target=feed)
        thread.start()
        try:
            shard = shard_of(fleet[0][0], SHARDS)
            communities = [c for c, _ in fleet if shard_of(c, SHARDS) == shard]
            victim: list[WorkerProcess] = []

            def owner() -> bool:
                victim[:] = [
                    w
                    for w in workers
                    if worker_metrics(url, w.name).get("shard_active", {}).get(str(shard)) == 1
                ]
                return len(victim) == 1

            time.sleep(15)  # past the first hand-over, so the shard stays where it is
            poll(owner, 120, f"the owner of shard {shard}", every=1.0)
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT clock_timestamp()").fetchone()
                assert row is not None
                killed_at = row[0]
                victim[0].kill()

                def resumed() -> bool:
                    got = conn.execute(
                        "SELECT min(r.received_at) FROM readings r JOIN devices d"
                        " ON d.id = r.device_id WHERE d.community_id = ANY(%s)"
                        " AND r.received_at > %s",
                        (communities, killed_at),
                    ).fetchone()
                    return got is not None and got[0] is not None

                poll(resumed, 120, "the shard resumed on the survivor", every=0.2)
                got = conn.execute(
                    "SELECT min(r.received_at) FROM readings r JOIN devices d"
                    " ON d.id = r.device_id WHERE d.community_id = ANY(%s) AND r.received_at > %s",
                    (communities, killed_at),
                ).fetchone()
                assert got is not None
            return float((got[0] - killed_at).total_seconds())
        finally:
            stop.set()
            thread.join()
            feeder.close()
            for w in workers:
                w.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument(
        "--patroni", action="store_true", help="a private 3-node Patroni cluster as the database"
    )
    parser.add_argument("--no-takeover", action="store_true", help="skip the takeover figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sc-bench-cluster-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        cluster = RabbitCluster(tmp / "rabbit", size=3)
        started = time.monotonic()
        stack.enter_context(cluster)
        print(f"3-node RabbitMQ cluster up in {time.monotonic() - started:.0f}s")
        patroni = None
        server = args.database
        if args.patroni:
            patroni = stack.enter_context(PatroniCluster(size=3))
            server = patroni.url
            print("database: 3-node Patroni cluster, synchronous_mode strict", flush=True)
        for count in (int(n) for n in args.workers.split(",")):
            run = throughput(cluster, server, count, args.messages, tmp, patroni)
            print(run.line(), flush=True)
        if not args.no_takeover:
            print(f"takeover_seconds={takeover(cluster, server, tmp):.2f}", flush=True)


if __name__ == "__main__":
    main()
