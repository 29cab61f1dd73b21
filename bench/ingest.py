"""End-to-end ingest throughput: the platform against the reference ingester.

    .venv/bin/python bench/ingest.py [--messages 100000] [--only reference,platform]

Publishes telemetry messages (3 metrics each, QoS 1) over 10,000 device topics
and times each ingester until the last row is committed to PostgreSQL:

- ``reference``: ``../shared/bench/peer_batched.py``, run unchanged: paho ->
  queue -> orjson -> binary COPY every 5,000 rows or 200 ms, auto-ack, no
  validation;
- ``platform``: ``smartcommunity run`` (validation, registry, de-duplication,
  staging-table COPY, ack after commit);
- ``batched`` and ``naive``: ``bench/baselines.py``; ``naive`` runs on fewer
  messages (``--naive-messages``) because it manages about 1k/s.

Method (``bench/fixture.py``, ``bench/ingesters.py``, ``bench/publisher.py``), the
same for each ingester: a fresh database with the platform's schema and 10,000
registered wearables, a private Mosquitto with the shipped configuration. In
``drain`` mode (the default) every message is published and PUBACKed before
the ingester starts, so the publisher takes no CPU from it on a small machine;
the clock runs from the ingester's CONNACK (the
reference, a clean session, is started, seen to write, paused while the broker
queues the messages for it, and timed from its resumption) to the commit of
the last row. In ``live`` mode the publisher runs while the ingester consumes,
and the clock starts with the first publish. CPU is the ingester process's user
+ system time over the timed window, and its database backends' and the
broker's beside it; peak memory is its ``VmHWM``. Each run is verified:
exactly 3 rows per message, every ``seq``, no dead letters. Runs are repeated
(``--repeat``, interleaved) and the median run of each ingester is reported;
the ratio is against the reference. ``--py-spy PATH`` samples each ingester
(only the thread holding the GIL: where its CPU goes) and prints its hotspots;
a profiled run's figures are not measurements.

``--mode latency`` runs ``bench/latency.py`` with these options.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import psycopg

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import (
    BENCH_APP,
    METRICS_PER_MESSAGE,
    REPO,
    START_TIMEOUT_S,
    BenchError,
    Workload,
    alert_summary,
    backend_cpu,
    cpu_delta,
    fresh_database,
    verify,
    watch_until_committed,
)
from bench.ingesters import (
    REFERENCE,
    STOP_TIMEOUT_S,
    Child,
    Profiler,
    ingester_arguments,
    ingester_kinds,
    process_cpu,
    start_ingester,
    wait_reference_ready,
)
from bench.publisher import prime_session, publish, publish_into
from bench.report import Result, format_table, summarise, versions

# -- one run ------------------------------------------------------------------------------


def run_one(kind: str, workload: Workload, args: argparse.Namespace, work_dir: Path) -> Result:
    from smartcommunity.embedded import EmbeddedBroker

    client_id = f"sc-bench-{kind}"
    print(f"{kind}: {workload.messages} messages ({args.mode})", file=sys.stderr)
    timeout_s = args.timeout
    with fresh_database(args.database_url, workload) as db_url:
        broker = EmbeddedBroker(
            data_dir=work_dir / f"broker-{kind}-{secrets.token_hex(3)}", kind="mosquitto"
        )
        mqtt_url = broker.start()
        child: Child | None = None
        profiler: Profiler | None = None
        stack = contextlib.ExitStack()
        try:
            # The platform speaks MQTT 5 to Mosquitto unless told otherwise ("auto").
            v5 = kind == "platform" or args.baseline_protocol == "5"
            publish_s = 0.0
            monitor = stack.enter_context(
                psycopg.connect(db_url, autocommit=True, application_name=BENCH_APP)
            )
            if kind == "reference":
                # A clean session (as written): it cannot drain a queue kept for it. So it
                # is started, seen to write, and paused while the broker takes the
                # messages for it; the clock starts when it is resumed.
                child = start_ingester(
                    kind, mqtt_url=mqtt_url, database_url=db_url, client_id=client_id, args=args
                )
                wait_reference_ready(mqtt_url, monitor, child)
                if args.mode == "drain":
                    child.proc.send_signal(signal.SIGSTOP)
                    try:
                        publish_s = publish(mqtt_url, workload, timeout_s=timeout_s)
                    finally:
                        child.proc.send_signal(signal.SIGCONT)
                    print(f"  published and acked in {publish_s:.1f}s", file=sys.stderr)
                started = time.monotonic()
            else:
                prime_session(mqtt_url, client_id, v5=v5)
                if args.mode == "drain":
                    publish_s = publish(mqtt_url, workload, timeout_s=timeout_s)
                    print(f"  published and acked in {publish_s:.1f}s", file=sys.stderr)
                child = start_ingester(
                    kind, mqtt_url=mqtt_url, database_url=db_url, client_id=client_id, args=args
                )
                started = child.wait_ready(START_TIMEOUT_S)
            cpu_start = child.cpu_seconds()
            db_start, broker_start = backend_cpu(monitor), process_cpu(broker.pid)
            if args.py_spy is not None:
                output = args.profile_dir / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
                profiler = Profiler(args.py_spy, child.proc.pid, output)
            publisher: threading.Thread | None = None
            publish_error: list[BaseException] = []
            publish_seconds: list[float] = []
            if args.mode == "live":
                started = time.monotonic()
                publisher = threading.Thread(
                    target=publish_into,
                    args=(mqtt_url, workload, timeout_s, publish_seconds, publish_error),
                    name="publisher",
                    daemon=True,
                )
                publisher.start()

            def publisher_failed() -> None:
                if publish_error:
                    raise BenchError(f"publisher failed: {publish_error[0]}")

            finished, _ = watch_until_committed(
                monitor, workload, child, timeout_s=timeout_s, check=publisher_failed, kind=kind
            )
            cpu_end = child.cpu_seconds()
            db_end, broker_end = backend_cpu(monitor), process_cpu(broker.pid)
            monitor.close()
            peak = child.peak_rss_bytes()
            if publisher is not None:
                publisher.join(timeout_s)
                publisher_failed()
                publish_s = publish_seconds[0] if publish_seconds else 0.0
                print(f"  published and acked in {publish_s:.1f}s", file=sys.stderr)
            child.stop()
            ok, checks = verify(db_url, workload, kind)
            if kind == "platform" and args.rules == "on":
                checks.append(alert_summary(db_url))
            if not ok:
                checks.append(child.tail())
            if profiler is not None:
                checks.append(f"{kind} profile ({profiler.output}):\n{profiler.finish()}")
            return Result(
                ingester=kind,
                messages=workload.messages,
                rows=workload.rows,
                seconds=finished - started,
                cpu_s=cpu_end - cpu_start,
                peak_rss_bytes=peak,
                publish_s=publish_s,
                db_cpu_s=cpu_delta(db_start, db_end),
                broker_cpu_s=(
                    None
                    if broker_start is None or broker_end is None
                    else broker_end - broker_start
                ),
                checks=checks,
                ok=ok,
            )
        finally:
            stack.close()
            if child is not None:
                child.stop()
            if profiler is not None and profiler.proc.poll() is None:
                profiler.proc.kill()
                profiler.proc.wait(STOP_TIMEOUT_S)
            broker.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ingester_arguments(parser, only="reference,platform")
    parser.add_argument("--messages", type=int, default=100_000, help="messages per ingester")
    parser.add_argument(
        "--naive-messages",
        type=int,
        default=5_000,
        help="messages for the naive ingester (at most --messages; it manages ~1k/s)",
    )
    parser.add_argument(
        "--storm",
        action="store_true",
        help="battery uniform over 5-100 %%: every device crosses battery thresholds",
    )
    parser.add_argument("--mode", choices=["drain", "live", "latency"], default="drain")
    parser.add_argument("--rate", type=float, default=2000.0, help="latency: msgs/s published")
    parser.add_argument("--duration", type=float, default=30.0, help="latency: seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="sample each ingester with this py-spy binary and print its hotspots "
        "(the sampler takes CPU: do not quote a profiled run's figures)",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=REPO / "bench" / "results" / "profiles",
        help="where --py-spy writes raw (collapsed) stacks",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = ingester_kinds(args)
    if args.messages < 1:
        raise SystemExit("--messages must be positive")
    if args.mode == "latency":  # its own benchmark; the option stays for old commands
        from bench import latency

        return latency.run(args, kinds)
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    print(versions(args.database_url))
    print(
        f"mode {args.mode}; {args.devices} devices; {METRICS_PER_MESSAGE} metrics per message; "
        f"QoS 1; baselines on MQTT {args.baseline_protocol}; "
        f"rules {args.rules}{', alert storm (battery 5-100 %)' if args.storm else ''}; "
        "every table with the natural key (device, metric, time) as primary key; "
        f"reference: {REFERENCE}"
    )
    print(
        "drain: all messages queued at the broker first, timed from the ingester's CONNACK"
        if args.mode == "drain"
        else "live: publisher and ingester concurrent, timed from the first publish",
        "to the commit of the last row",
    )
    results: list[Result] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        for _ in range(args.repeat):
            for kind in kinds:
                messages = args.messages
                if kind == "naive":
                    messages = min(args.messages, args.naive_messages)
                # Past messages, so that no timestamp is in the future; unique ts per message.
                base_ms = int(time.time() * 1000) - messages - 3_600_000
                workload = Workload(
                    messages=messages, devices=args.devices, base_ms=base_ms, storm=args.storm
                )
                try:
                    result = run_one(kind, workload, args, Path(tmp))
                except BenchError as exc:
                    print(f"{kind}: FAILED: {exc}", file=sys.stderr)
                    failures.append(f"{kind}: FAILED: {str(exc).splitlines()[0]}")
                    continue
                results.append(result)
                if not result.ok:
                    failures.append(f"{kind}: FAILED verification")
                print(f"  {result.msgs_per_s:.0f} msgs/s; {result.checks[0]}", file=sys.stderr)
    print()
    if args.repeat > 1:
        print(f"all runs ({args.repeat} of each):")
        print(format_table(results, results))
        print()
        print("median run of each ingester:")
    print(format_table(summarise(results), results))
    print(
        "CPU ms/1k and peak RSS: the ingester process; DB ms/1k: its PostgreSQL backends; "
        "broker ms/1k: Mosquitto; all over the timed window"
    )
    print()
    for r in results:
        for line in r.checks:
            print(line)
    for line in failures:
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(
            orjson.dumps(
                {
                    "command": sys.argv,
                    "mode": args.mode,
                    "results": [
                        {
                            "ingester": r.ingester,
                            "messages": r.messages,
                            "rows": r.rows,
                            "seconds": r.seconds,
                            "msgs_per_s": r.msgs_per_s,
                            "rows_per_s": r.rows_per_s,
                            "cpu_ms_per_1k_msgs": r.cpu_ms_per_1k,
                            "peak_rss_bytes": r.peak_rss_bytes,
                            "db_cpu_s": r.db_cpu_s,
                            "broker_cpu_s": r.broker_cpu_s,
                            "ok": r.ok,
                        }
                        for r in results
                    ],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
