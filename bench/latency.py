"""Publish -> row visible: latency at a set rate, the platform against the reference.

    .venv/bin/python bench/latency.py [--rate 2000] [--duration 30] [--devices 1000]

Publishes at ``--rate`` for ``--duration`` s with device time = publish time;
a monitor polls the newest row of 10 devices every 5 ms (one query: an index
lookup per device) and notes when each of their messages became visible. Prints p50/p99/max per
run, the poll adding up to 5 ms. The workload, scratch database, ingester processes
and publisher (``bench/fixture.py``, ``bench/ingesters.py``, ``bench/publisher.py``)
are the ones ``bench/ingest.py`` uses: fresh database and broker per run.
"""

from __future__ import annotations

import argparse
import collections
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import psycopg

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import (
    BENCH_APP,
    EPOCH,
    LAST_METRIC,
    START_TIMEOUT_S,
    BenchError,
    Workload,
    fresh_database,
    ingester_table,
)
from bench.ingesters import (
    Child,
    ingester_arguments,
    ingester_kinds,
    start_ingester,
    wait_reference_ready,
)
from bench.publisher import connected_client, prime_session
from bench.report import quantile, versions

# Devices whose rows the latency monitor watches (index lookups on the natural key).
LATENCY_PROBES = 10
LATENCY_POLL_S = 0.005


def run_latency(kind: str, args: argparse.Namespace, work_dir: Path) -> str:
    """Publish at ``--rate`` for ``--duration`` s, device time = publish time; a monitor
    polls the newest row of a few devices every 5 ms and notes when each published
    message of theirs became visible (the rows of one device commit in order).
    Returns one line of p50/p99/max publish -> row visible."""
    from smartcommunity.embedded import EmbeddedBroker

    client_id = f"sc-bench-{kind}"
    total = int(args.rate * args.duration)
    workload = Workload(messages=total, devices=args.devices, base_ms=0)
    table, ts_column = ingester_table(kind)
    probes = [workload.device_id(d) for d in range(min(LATENCY_PROBES, args.devices))]
    with fresh_database(args.database_url, workload) as db_url:
        broker = EmbeddedBroker(
            data_dir=work_dir / f"broker-{kind}-{secrets.token_hex(3)}", kind="mosquitto"
        )
        mqtt_url = broker.start()
        child: Child | None = None
        try:
            monitor = psycopg.connect(db_url, autocommit=True, application_name=BENCH_APP)
            if kind == "reference":
                child = start_ingester(
                    kind, mqtt_url=mqtt_url, database_url=db_url, client_id=client_id, args=args
                )
                wait_reference_ready(mqtt_url, monitor, child)
            else:
                prime_session(mqtt_url, client_id, v5=True)
                child = start_ingester(
                    kind, mqtt_url=mqtt_url, database_url=db_url, client_id=client_id, args=args
                )
                child.wait_ready(START_TIMEOUT_S)
            published: dict[tuple[str, datetime], float] = {}  # probe rows: (device, ts) -> t
            visible: dict[tuple[str, datetime], float] = {}
            # Per probe, its published rows not yet seen, in publish (= device time) order.
            unseen: dict[str, collections.deque[datetime]] = {
                d: collections.deque() for d in probes
            }
            done = threading.Event()
            # Every probe's newest row in one round trip (an index lookup each): a poll
            # is one wake-up of this process and of the server, so that on a loaded
            # machine the poll period stays close to LATENCY_POLL_S.
            sql = (
                f"SELECT d, (SELECT max({ts_column}) FROM {table}"
                f" WHERE device_id = d AND metric = '{LAST_METRIC}')"
                " FROM unnest(%s::text[]) AS d"
            )

            def watch() -> None:
                while not done.is_set():
                    rows = monitor.execute(sql, (probes,)).fetchall()
                    now = time.monotonic()
                    for device, newest in rows:
                        waiting = unseen[device]
                        while newest is not None and waiting and waiting[0] <= newest:
                            visible[device, waiting.popleft()] = now
                    time.sleep(LATENCY_POLL_S)

            client = connected_client(
                mqtt_url, f"sc-bench-pub-{secrets.token_hex(4)}", clean_start=True, max_inflight=0
            )
            watcher = threading.Thread(target=watch, name="latency-watch", daemon=True)
            watcher.start()
            start = time.monotonic()
            try:
                for i in range(total):
                    due = start + i / args.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    ms = int(time.time() * 1000)
                    ts = EPOCH + timedelta(milliseconds=ms)
                    device = workload.device_id(i % args.devices)
                    body = orjson.dumps(
                        {
                            "ts": ts.isoformat(timespec="milliseconds"),
                            "seq": i,
                            "metrics": {"heart_rate": 70, "spo2": 97.0, LAST_METRIC: 50},
                        }
                    )
                    if device in unseen:
                        published[device, ts] = time.monotonic()
                        unseen[device].append(ts)
                    client.publish(workload.topic(i % args.devices), body, qos=1)
                deadline = time.monotonic() + 30
                while len(visible) < len(published) and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                done.set()
                watcher.join(5)
                client.disconnect()
                client.loop_stop()
                monitor.close()
            achieved = total / (time.monotonic() - start)
            waits = [(visible[k] - t) * 1000 for k, t in published.items() if k in visible]
            missing = len(published) - len(waits)
            if not waits:
                return f"{kind:<10} no row became visible"
            return (
                f"{kind:<10} {len(waits):>5} {quantile(waits, 0.5):>7.1f} "
                f"{quantile(waits, 0.99):>7.1f} {max(waits):>7.1f}"
                f"   (publish rate {achieved:.0f} msgs/s; {missing} not seen)"
            )
        finally:
            if child is not None:
                child.stop()
            broker.stop()


def run(args: argparse.Namespace, kinds: Sequence[str]) -> int:
    """Every ingester of ``kinds``, ``--repeat`` times interleaved; prints the table."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        for _ in range(args.repeat):
            for kind in kinds:
                print(f"{kind}: latency at {args.rate:.0f} msgs/s", file=sys.stderr)
                try:
                    lines.append(run_latency(kind, args, Path(tmp)))
                except BenchError as exc:
                    lines.append(f"{kind}: FAILED: {str(exc).splitlines()[0]}")
    print(f"publish -> row visible, {args.rate:.0f} msgs/s over {args.devices} devices")
    print(f"{'ingester':<10} {'n':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for line in lines:
        print(line)
    return 1 if any("FAILED" in line for line in lines) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ingester_arguments(parser, only="reference,platform")
    parser.set_defaults(devices=1_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="msgs/s published")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)
    kinds = ingester_kinds(args)
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(versions(args.database_url))
    return run(args, kinds)


if __name__ == "__main__":
    sys.exit(main())
