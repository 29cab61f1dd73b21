"""A run's figures and how they are reported: the median run of each ingester, the
table, percentiles, and the versions measured with."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

import psycopg


@dataclass(slots=True)
class Result:
    ingester: str
    messages: int
    rows: int
    seconds: float
    cpu_s: float
    peak_rss_bytes: int
    publish_s: float
    db_cpu_s: float | None = None  # the ingester's PostgreSQL backends
    broker_cpu_s: float | None = None
    checks: list[str] = field(default_factory=list)
    ok: bool = True

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_ms_per_1k(self) -> float:
        return self.cpu_s * 1e6 / self.messages

    def per_1k(self, cpu_s: float | None) -> str:
        return "-" if cpu_s is None else f"{cpu_s * 1e6 / self.messages:.1f}"


def median_result(runs: Sequence[Result]) -> Result:
    """The run with the median throughput (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.msgs_per_s)
    return ordered[(len(ordered) - 1) // 2]


def summarise(results: Sequence[Result]) -> list[Result]:
    """One result per ingester, in first-run order: the median run of its repeats."""
    kinds = list(dict.fromkeys(r.ingester for r in results))
    return [
        median_result(
            [r for r in results if r.ingester == k and r.ok]
            or [r for r in results if r.ingester == k]
        )
        for k in kinds
    ]


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def format_table(results: Sequence[Result], reference: Sequence[Result]) -> str:
    yardstick = "reference" if any(r.ingester == "reference" for r in reference) else "batched"
    runs = [r.msgs_per_s for r in reference if r.ingester == yardstick and r.ok]
    base = statistics.median(runs) if runs else None
    header = (
        f"{'ingester':<10} {'messages':>8} {'rows':>8} {'seconds':>7} {'msgs/s':>7} "
        f"{'rows/s':>7} {'CPU ms/1k':>9} {'peak RSS MB':>11} {'ratio':>10} "
        f"{'DB ms/1k':>8} {'broker ms/1k':>12}  check"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ratio = f"{r.msgs_per_s / base:.2f}x" if base else "-"
        lines.append(
            f"{r.ingester:<10} {r.messages:>8} {r.rows:>8} {r.seconds:>7.2f} "
            f"{r.msgs_per_s:>7.0f} {r.rows_per_s:>7.0f} {r.cpu_ms_per_1k:>9.1f} "
            f"{r.peak_rss_bytes / 2**20:>11.1f} {ratio:>10} "
            f"{r.per_1k(r.db_cpu_s):>8} {r.per_1k(r.broker_cpu_s):>12}  "
            f"{'OK' if r.ok else 'FAILED'}"
        )
    return "\n".join(lines)


def versions(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pg = row[0] if row else "?"
    mosq: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        mosq = subprocess.run(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.splitlines()
    return (
        f"PostgreSQL {pg}, {mosq[0] if mosq else 'mosquitto ?'}, Python "
        f"{sys.version.split()[0]}, paho-mqtt {metadata.version('paho-mqtt')}, "
        f"psycopg {psycopg.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
