"""The Patroni primary killed under load: failover time, and nothing acknowledged lost.

Three PostgreSQL 15 nodes under Patroni (etcd, ``synchronous_mode`` strict;
``smartcommunity.patroni_cluster``) and a private RabbitMQ (one node by default:
fewer Erlang schedulers competing for 2 cores, so the times are the database's).
Two ``smartcommunity worker`` processes reach PostgreSQL only through the libpq
multi-host URL with ``target_session_attrs=read-write``. A feeder publishes
telemetry with publisher confirms at a steady rate (a confirmed message is one
the broker took responsibility for, as a PUBACK is for a device); the primary is
killed with SIGKILL (Patroni and PostgreSQL: a lost machine) mid-stream.

Printed: seconds from the kill to the new primary's election and to the first
row it commits; messages sent, confirmed and stored; lost (confirmed, not
stored: must be 0); duplicate rows (must be 0); and, while the load ran before
the kill, PostgreSQL CPU per 1,000 messages on the primary (its whole process
tree: backends, WAL writer, WAL senders, checkpointer) and on each replica.

    .venv/bin/python bench/patroni_failover.py [--rate 300] [--before 20] [--after 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika
import psutil
import psycopg
from pika.exceptions import AMQPError

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Feeder, register, start_workers
from bench.fixture import BENCH_APP
from core.topics import device_topic
from gateway.shards import EXCHANGE, topic_to_routing_key
from smartcommunity.cluster_rig import poll
from smartcommunity.patroni_cluster import PatroniCluster, PatroniNode
from smartcommunity.rabbit_cluster import RabbitCluster

# Telemetry an hour back, one timestamp per message: (device, ts) names a message.
BASE_MS = int(time.time() * 1000) - 3_600_000
# How often the row count is read while looking for the first commit after the kill.
SAMPLE_S = 0.1
FEEDERS = 4


class ConfirmedFeeder(Feeder):
    """Publishes with publisher confirms; remembers which messages the broker confirmed."""

    def __init__(
        self, amqp_url: str, fleet: list[tuple[str, list[str]]], index: int, of: int
    ) -> None:
        super().__init__(amqp_url, fleet)
        # A confirm takes a quorum fsync (~10 ms): several feeders, each its own
        # connection, interleave their message numbers to reach the rate.
        self.index, self.of = index, of
        self.channel.confirm_delivery()
        self.confirmed: set[tuple[str, int]] = set()
        self.failed = 0

    def publish_one(self) -> None:
        n = self.index + self.of * self.sent
        cid, devices = self.fleet[n % len(self.fleet)]
        device = devices[(n // len(self.fleet)) % len(devices)]
        ts = BASE_MS + n
        body = json.dumps({"ts": ts, "seq": n, "metrics": {"heart_rate": 70, "spo2": 97}})
        key = topic_to_routing_key(device_topic(cid, "wearable", device, "telemetry"))
        self.sent += 1
        try:  # returns once the broker confirmed (quorum queue: on a majority)
            self.channel.basic_publish(
                EXCHANGE, key, body.encode(), pika.BasicProperties(delivery_mode=2)
            )
        except AMQPError:
            self.failed += 1
            return
        self.confirmed.add((device, ts))


def tree_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def count(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=2, application_name=BENCH_APP) as c:
        row = c.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="messages per second")
    parser.add_argument("--before", type=float, default=20.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after")
    parser.add_argument("--rabbit-nodes", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sc-bench-patroni-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.monotonic()
        with (
            RabbitCluster(tmp / "rabbit", size=args.rabbit_nodes) as rabbit,
            PatroniCluster(size=3) as pg,
        ):
            print(
                f"RabbitMQ ({args.rabbit_nodes} node) and Patroni (3 nodes, synchronous)"
                f" up in {time.monotonic() - started:.0f}s",
                flush=True,
            )
            run(rabbit, pg, tmp, args.rate, args.before, args.after)


def run(
    rabbit: RabbitCluster, pg: PatroniCluster, tmp: Path, rate: float, before: float, after: float
) -> None:
    url = pg.url
    fleet = register(url)
    feeders = [ConfirmedFeeder(rabbit.nodes[0].amqp_url, fleet, i, FEEDERS) for i in range(FEEDERS)]
    feeders[0].topology("sc.failover")
    workers = start_workers(rabbit, url, 2, "sc.failover", tmp)
    stop = threading.Event()

    def feed(feeder: ConfirmedFeeder) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            feeder.publish_one()
            next_at += FEEDERS / rate
            stop.wait(max(0.0, next_at - time.monotonic()))

    def sent() -> int:
        return sum(f.sent for f in feeders)

    threads = [threading.Thread(target=feed, args=(f,), name="feeder") for f in feeders]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: count(url) > 2 * rate, 120, "load flowing", every=0.5)
        old, standby = pg.leader(), pg.sync_standby()
        assert old is not None
        assert standby is not None
        nodes: list[PatroniNode] = pg.nodes
        cpu_before = {n.name: tree_cpu(n.postmaster_pid()) for n in nodes}
        rows_before, sent_before = count(url), sent()
        time.sleep(before)
        rows_after, sent_after = count(url), sent()
        cpu = {n.name: tree_cpu(n.postmaster_pid()) - cpu_before[n.name] for n in nodes}
        messages = (rows_after - rows_before) / 2  # two metrics a message
        print(
            f"steady: {sent_after - sent_before} messages in {before:.0f}s"
            f" (asked {rate:.0f}/s),"
            f" {(rows_after - rows_before) / before:,.0f} rows/s stored",
            flush=True,
        )
        for n in nodes:
            role = "primary" if n is old else ("sync standby" if n is standby else "replica")
            print(
                f"  {n.name} ({role}) postgres_cpu_s_per_1k={cpu[n.name] / messages * 1000:.3f}",
                flush=True,
            )

        last = count(url)
        killed = time.monotonic()
        pg.kill(old)
        elected = resumed = None
        previous: int | None = None
        while resumed is None and time.monotonic() - killed < 180:
            if elected is None and pg.leader() not in (None, old):
                elected = time.monotonic() - killed
            try:
                now = count(url)
            except psycopg.OperationalError:
                now = None
            # The first commit on the new primary: its count grows between two reads.
            if now is not None and previous is not None and now > previous and now > last:
                resumed = time.monotonic() - killed
            previous = now if now is not None else previous
            time.sleep(SAMPLE_S)
        new = pg.leader()
        print(
            f"failover: primary {old.name} killed; new primary {new.name if new else None}"
            f" (was the sync standby: {new is standby});"
            f" elected_after_s={elected if elected is None else round(elected, 1)}"
            f" first_commit_after_s={resumed if resumed is None else round(resumed, 1)}",
            flush=True,
        )
        time.sleep(after)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for feeder in feeders:
            feeder.close()

    try:
        confirmed = set().union(*(f.confirmed for f in feeders))
        poll(lambda: count(url) >= 2 * len(confirmed), 300, "every confirmed message stored")
        with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as conn:
            stored = {
                (str(d), round(ts.timestamp() * 1000))
                for d, ts in conn.execute("SELECT DISTINCT device_id, ts FROM readings")
            }
            row = conn.execute(
                "SELECT count(*) - count(DISTINCT (device_id, metric, ts)) FROM readings"
            ).fetchone()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        duplicates = int(row[0]) if row else -1
        lost = len(confirmed - stored)
        print(
            f"sent={sent()} confirmed={len(confirmed)}"
            f" publish_failed={sum(f.failed for f in feeders)}"
            f" stored={len(stored)} lost={lost} duplicate_rows={duplicates}"
            f" dead_letters={dead[0] if dead else None}",
            flush=True,
        )
    finally:
        for w in workers:
            w.stop()
    if lost or duplicates:
        raise SystemExit("acknowledged readings lost or doubled")


if __name__ == "__main__":
    main()
