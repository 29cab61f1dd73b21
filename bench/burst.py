"""Memory under a backlog burst: peak RSS draining 1x and 10x the usual backlog.

    .venv/bin/python bench/burst.py [--base 50000] [--factor 10] [--only platform]

The broker holds a backlog while the ingester is down (every message published
and PUBACKed into its persistent session first), then the ingester starts and
drains it; the run ends with the last row committed and verified. Each
ingester drains ``--base`` messages and then ``--factor`` times as many, in the
same invocation, and the table gives its peak RSS (``VmHWM``) for both and
their ratio: memory that grows with the backlog shows as a ratio well above 1.

The platform bounds what it holds by the MQTT 5 receive maximum (messages the
broker may send before their ack, which comes after commit); the reference
(``--only reference,platform``) acknowledges on receipt and queues without
bound. Same method as ``bench/ingest.py`` (``bench/fixture.py``, ``bench/ingesters.py``,
``bench/publisher.py``; drain mode).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import BenchError, Workload
from bench.ingest import run_one
from bench.ingesters import ingester_arguments, ingester_kinds
from bench.report import Result, versions

MB = 2**20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ingester_arguments(parser, only="platform")
    parser.set_defaults(repeat=1, timeout=3600.0)
    parser.add_argument("--base", type=int, default=50_000, help="the usual backlog (messages)")
    parser.add_argument("--factor", type=int, default=10, help="the burst, times --base")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = ingester_kinds(args)
    if args.base < 1 or args.factor < 1:
        raise SystemExit("--base and --factor must be positive")
    # What bench/ingest.py's run_one reads besides the shared options.
    args.mode, args.py_spy, args.storm = "drain", None, False
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(versions(args.database_url))
    sizes = (args.base, args.base * args.factor)
    results: dict[tuple[str, int], list[Result]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        for _ in range(args.repeat):
            for kind in kinds:
                for messages in sizes:
                    base_ms = int(time.time() * 1000) - messages - 3_600_000
                    workload = Workload(messages=messages, devices=args.devices, base_ms=base_ms)
                    try:
                        result = run_one(kind, workload, args, Path(tmp))
                    except BenchError as exc:
                        failures.append(f"{kind} {messages}: FAILED: {str(exc).splitlines()[0]}")
                        print(failures[-1], file=sys.stderr)
                        continue
                    if not result.ok:
                        failures.append(f"{kind} {messages}: FAILED verification")
                    results.setdefault((kind, messages), []).append(result)
    print()
    print(f"backlog drained from the broker: {sizes[0]} and {sizes[1]} messages")
    header = (
        f"{'ingester':<10} {'backlog':>8} {'seconds':>8} {'msgs/s':>7} {'CPU ms/1k':>9} "
        f"{'peak RSS MB':>11} {'RSS / 1x':>8}  check"
    )
    print(header)
    print("-" * len(header))
    for kind in kinds:
        base_rss = [r.peak_rss_bytes for r in results.get((kind, sizes[0]), [])]
        for messages in sizes:
            for r in results.get((kind, messages), []):
                growth = f"{r.peak_rss_bytes / min(base_rss):.2f}x" if base_rss else "-"
                print(
                    f"{kind:<10} {messages:>8} {r.seconds:>8.1f} {r.msgs_per_s:>7.0f} "
                    f"{r.cpu_ms_per_1k:>9.1f} {r.peak_rss_bytes / MB:>11.1f} {growth:>8}  "
                    f"{'OK' if r.ok else 'FAILED'}"
                )
    print("peak RSS: VmHWM of the ingester process over its whole life")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
