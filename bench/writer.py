"""The ingest writer's server cost: database CPU per 1,000 messages, by batch size and statement.

    .venv/bin/python bench/writer.py [--sizes 200,2000,5000] [--messages 60000]

Writes 3-metric telemetry batches over 10,000 devices straight through
``ingest.writer.BatchWriter`` (no broker, no intake) into a fresh database
(``bench/fixture.py``), and reads the CPU time of the writer's backend from
``/proc/<pid>/schedstat`` (nanoseconds; the database must run on this machine)
around each batch and each statement. The first batches, which insert every
device's ``latest`` rows, are left out of the medians. This is the server side
of what ``bench/ingest.py`` reports as "DB ms/1k", one statement at a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import EPOCH, Workload, fresh_database
from bench.report import versions
from core.models import Reading
from ingest.batch import Accepted, Batch
from ingest.writer import BatchWriter

METRICS = (("heart_rate", 70.0), ("spo2", 97.0), ("battery", 50.0))


def _batch(workload: Workload, first: int, size: int) -> Batch:
    now = datetime.now(UTC)
    accepted = []
    for i in range(first, first + size):
        device = workload.device_id(i % workload.devices)
        ts = EPOCH + timedelta(milliseconds=workload.base_ms + i)
        readings = [Reading(device, m, ts, v, i, now) for m, v in METRICS]
        accepted.append(
            Accepted(
                device_id=device,
                topic=workload.topic(i % workload.devices),
                payload=b"",
                readings=readings,
                device_time=ts,
                received_at=now,
                seq=i,
            )
        )
    return Batch(accepted, [])


@contextmanager
def _statement_clock(cpu: Callable[[], float], into: dict[str, list[float]]) -> Iterator[None]:
    """Server CPU per statement the writer executes (the bench's process only)."""
    original = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        before = cpu()
        try:
            return original(self, query, *args, **kwargs)
        finally:
            text = query.decode() if isinstance(query, bytes) else str(query)
            into[" ".join(text.split())[:70]].append(cpu() - before)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    try:
        yield
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]


def run(server_url: str, size: int, messages: int, devices: int) -> list[str]:
    batches = max(messages // size, 2)
    base_ms = int(time.time() * 1000) - 3_600_000 - batches * size
    workload = Workload(messages=batches * size, devices=devices, base_ms=base_ms)
    warm = -(-devices // size)  # batches until every device has its latest rows
    totals: list[float] = []
    statements: dict[str, list[float]] = defaultdict(list)
    with fresh_database(server_url, workload) as url:
        writer = BatchWriter(url=url, worker="bench")
        try:
            with writer.connection() as conn:  # the pool's one connection, while no outage
                pid = conn.info.backend_pid
            stat = Path(f"/proc/{pid}/schedstat")

            def cpu() -> float:
                return int(stat.read_text().split()[0]) / 1e6  # ms

            for b in range(batches):
                batch = _batch(workload, b * size, size)
                per: dict[str, list[float]] = defaultdict(list)
                before = cpu()
                with _statement_clock(cpu, per):
                    writer.write(batch)
                if b >= min(warm, batches - 1):
                    totals.append(cpu() - before)
                    for key, values in per.items():
                        statements[key] += values
        finally:
            writer.close()
    median = statistics.median(totals)
    lines = [
        f"batches of {size} messages: {median:.1f} ms server CPU a batch, "
        f"{median * 1000 / size:.1f} ms per 1,000 messages (median of {len(totals)} batches)"
    ]
    for key, values in statements.items():
        lines.append(
            f"  {statistics.median(values):7.2f} ms  x{len(values) / len(totals):.2f}  {key}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="200,2000,5000", help="batch sizes, in messages")
    parser.add_argument("--messages", type=int, default=60_000, help="messages per batch size")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server (on this machine) where a scratch database is created and dropped",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(versions(args.database_url))
    for size in sizes:
        for line in run(args.database_url, size, args.messages, args.devices):
            print(line)
    print("statements: median server CPU when run, and how often a batch runs them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
